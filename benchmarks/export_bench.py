"""Export time per format and file sizes of VGG16 at 32 px and 224 px.

Usage::

    .venv/bin/python benchmarks/export_bench.py --rounds 3 --sizes 32 224 --out bench-export.json

Each round exports every (size, format) pair once, in a rotated order so that drift on a
shared machine spreads over all pairs; the table reports medians over rounds. Weights are
random (seeded): export time and file size do not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

VARIANTS = (
    ("onnx", "fp32"),
    ("onnx", "fp16"),
    ("torchscript", "fp32"),
    ("pt2", "fp32"),
)


def make_run(run: Path, *, image_size: int, seed: int = 0) -> Path:
    """A run folder with random VGG16 weights and a minimal train.json."""
    import torch
    from safetensors.torch import save_file

    from exporter.core.preprocess import Preprocessing
    from exporter.model.vgg import build_vgg16

    torch.manual_seed(seed)
    model = build_vgg16(num_classes=10, weights="none").eval()
    run.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors")
    )
    record = {
        "schema_version": 1,
        "dataset": {"name": "synthetic", "class_names": [f"c{i}" for i in range(10)]},
        "preprocessing": Preprocessing(image_size=image_size).to_dict(),
        "best": {"val_accuracy": None},
    }
    (run / "train.json").write_text(json.dumps(record))
    return run


def main() -> None:
    from exporter.core.config import ExportConfig
    from exporter.core.envinfo import environment
    from exporter.core.fsio import write_json
    from exporter.export.export import export_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--out", type=Path, default=Path("bench-export.json"))
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tlx-export-bench-"))
    runs = {size: make_run(work / f"run{size}", image_size=size) for size in args.sizes}
    pairs = [(size, fmt, prec) for size in args.sizes for fmt, prec in VARIANTS]
    samples: dict[str, list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            shift = r % len(pairs)
            for size, fmt, prec in pairs[shift:] + pairs[:shift]:
                cfg = ExportConfig(formats=(fmt,), precision=prec, force=True)
                res = export_run(runs[size], cfg).formats[fmt]
                key = f"{size}px/{res.name}"
                samples.setdefault(key, []).append(res.to_dict())
                print(
                    f"round {r + 1} {key}: export {res.export_time_s:.2f} s, "
                    f"check {res.check_time_s:.2f} s, {res.bytes / 1e6:.1f} MB, "
                    f"max|diff| {res.max_abs_diff:.2e}",
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for key, rows in samples.items():
        summary[key] = {
            "export_time_s_median": statistics.median(x["export_time_s"] for x in rows),
            "export_time_s_all": [x["export_time_s"] for x in rows],
            "check_time_s_median": statistics.median(x["check_time_s"] for x in rows),
            "bytes": rows[-1]["bytes"],
            "check_max_abs_diff_max": max(x["check_max_abs_diff"] for x in rows),
        }
    write_json(
        args.out,
        {
            "schema_version": 1,
            "command": "benchmarks/export_bench.py",
            "config": {"rounds": args.rounds, "sizes": args.sizes},
            "environment": environment("cpu"),
            "results": summary,
        },
    )
    print("\n| size / file | export s (median) | check s (median) | MB | max abs diff |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, s in summary.items():
        print(
            f"| {key} | {s['export_time_s_median']:.2f} | {s['check_time_s_median']:.2f} | "
            f"{s['bytes'] / 1e6:.1f} | {s['check_max_abs_diff_max']:.1e} |"
        )


if __name__ == "__main__":
    main()

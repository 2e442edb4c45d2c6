"""Benchmark the `tlx optimize` variants against eager PyTorch fp32, interleaved, on the CPU.

Usage::

    .venv/bin/python benchmarks/optimize_bench.py --out benchmarks/optimize_runs

1. A 32 px run trained briefly on the synthetic shapes dataset with ``exporter.train.fit``
   (``--weights none``: no download; frozen random trunk, trained head), and a 224 px run
   trained with ``exporter.train.fit`` and the demo's recipe (feature cache, 400 images).
2. ``optimize_run`` builds and gates the variants on held-out images (the gate's top-1
   agreement and accuracy are the numbers in the table).
3. Every variant and eager are timed in interleaved rounds (rounds × runtimes, so machine
   drift hits all of them alike); medians and p99 of the per-call latencies are reported.

Writes ``<out>/optimize_bench.json`` and ``benchmarks/pareto.png``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREADS = 2


def make_runs(out: Path, *, steps: int) -> tuple[Path, Path]:
    """A head-trained 32 px synthetic run and a head-trained 224 px run.

    ``exporter.train.fit`` exists, but 2 epochs of it from random weights reached only 22%
    val accuracy with near-flat logits, so the 32 px run trains the head directly (Adam on the
    frozen trunk's features, as tests/optimize/test_optimize.py does): ~85% val accuracy in seconds.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _make_run_folder as make_run_folder

    run32 = out / "synthetic32"
    if not (run32 / "model.safetensors").exists():
        make_run_folder(run32, image_size=32, train_size=1000, val_size=500, seed=1)
        train_head(run32, n_train=1000, steps=steps)
    run224 = out / "trained224"
    if not (run224 / "model.safetensors").exists():
        train_224(run224)
    return run32, run224


def train_224(run_dir: Path) -> None:
    """A 224 px run trained the product's way: ``exporter.train.fit`` with its defaults.

    A random-weights 224 px model has near-tied logits everywhere, so any int8 rounding flips
    decisions and the gate (rightly) rejects it; a head trained on the synthetic classes makes
    the decisions a deployed model makes. No augmentation, so the frozen trunk runs once
    (feature cache).
    """
    from exporter.core.config import DataConfig, TrainConfig
    from exporter.train import fit

    epochs = 12
    fit(
        TrainConfig(
            data=DataConfig(
                source="synthetic", train_size=400, val_size=256, image_size=224, augment="off"
            ),
            weights="none",
            epochs=epochs,
            save_every=epochs,
            out=str(run_dir),
            quiet=True,
        )
    )


def train_head(run_dir: Path, *, n_train: int, steps: int) -> None:
    import torch
    from safetensors.torch import save_file

    from exporter.core.runfolder import open_run
    from exporter.data.datasets import load_eval_images
    from exporter.model.vgg import load_reference_model

    info = open_run(run_dir)
    model = load_reference_model(info)
    x, y = load_eval_images(info, n_train, split="train")
    with torch.no_grad():
        feats = model.classifier[:6](model.avgpool(model.features(torch.from_numpy(x))).flatten(1))
    head, labels = model.classifier[6], torch.from_numpy(y)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(feats), labels).backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run_dir / WEIGHTS))


WEIGHTS = "model.safetensors"


def optimize(run: Path, variants: tuple[str, ...], *, eval_samples: int) -> dict:
    from exporter.core.config import OptimizeConfig
    from exporter.optimize.optimize import optimize_run

    cfg = OptimizeConfig(variants=variants, calib_samples=32, eval_samples=eval_samples, force=True)
    t0 = time.perf_counter()
    result = optimize_run(run, cfg, progress=lambda m, *_: print("  " + m, file=sys.stderr))
    print(f"  optimize took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {v.variant: v.to_dict() for v in result.variants}


def sessions(run: Path, names: list[str]) -> dict:
    import torch

    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.runtimes.ort import cpu_session

    torch.set_num_threads(THREADS)
    model = load_reference_model(open_run(run))
    fns = {}

    def eager(x: np.ndarray) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(x))

    fns["eager fp32"] = eager
    for name in names:
        s = cpu_session(run / name, threads=THREADS)
        fns[name] = lambda x, s=s: s.run(None, {"input": x})
    return fns


def time_interleaved(fns: dict, x: np.ndarray, *, rounds: int, per_round: int) -> dict:
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up, untimed
        fn(x)
        fn(x)
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn(x)
                samples[name].append(1e3 * (time.perf_counter() - t0))
    out = {}
    for name, ms in samples.items():
        p50 = float(np.median(ms))
        out[name] = {
            "latency_ms_p50": p50,
            "latency_ms_p99": float(np.percentile(ms, 99)),
            "throughput_img_s": len(x) * 1e3 / p50,
            "samples": len(ms),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "optimize_runs")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps training the head")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--skip-build", action="store_true", help="reuse variants already built")
    ap.add_argument(
        "--plot-only", type=Path, metavar="JSON", help="redraw pareto.png from a saved report"
    )
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(args.plot_only.read_text()), ROOT / "benchmarks" / "pareto.png")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from exporter.core.envinfo import environment

    run32, run224 = make_runs(args.out, steps=args.steps)
    report_path = args.out / "optimize_bench.json"
    built = json.loads(report_path.read_text())["built"] if args.skip_build else {}
    if not args.skip_build:
        print("optimize 32 px", file=sys.stderr)
        built["32"] = optimize(
            run32, ("fold", "int8", "int8-dynamic", "fold-int8"), eval_samples=500
        )
        print("optimize 224 px", file=sys.stderr)
        built["224"] = optimize(run224, ("fold", "int8"), eval_samples=256)

    results = {}
    rng = np.random.default_rng(0)
    for size, run, batches in (("32", run32, (1, 64)), ("224", run224, (1,))):
        # Rejected variants are timed too (from rejected/), so the table shows what was lost.
        names = [v["path"] for v in built[size].values() if v["status"] != "skipped"]
        fns = sessions(run, names)
        for batch in batches:
            x = rng.standard_normal((batch, 3, int(size), int(size))).astype(np.float32)
            per_round = 20 if batch == 1 and size == "32" else 3
            print(f"timing {size} px batch {batch}", file=sys.stderr)
            cell = time_interleaved(fns, x, rounds=args.rounds, per_round=per_round)
            base = cell["eager fp32"]
            for c in cell.values():
                c["speedup_p50_vs_eager"] = base["latency_ms_p50"] / c["latency_ms_p50"]
                c["throughput_ratio_vs_eager"] = c["throughput_img_s"] / base["throughput_img_s"]
            results[f"{size}px_b{batch}"] = cell
        del fns
    report = {
        "schema_version": 1,
        "command": " ".join(sys.argv),
        "environment": environment("cpu"),
        "threads": THREADS,
        "built": built,
        "timing": results,
    }
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    plot(report, ROOT / "benchmarks" / "pareto.png")


def _variant_rows(report: dict) -> list[dict]:
    rows = []
    for key, cell in report["timing"].items():
        size = key.split("px")[0]
        by_file = {v["path"]: v for v in report["built"][size].values()}
        for name, t in cell.items():
            v = by_file.get(name)
            gate = (v or {}).get("gate") or {}
            rows.append(
                {
                    "cell": key,
                    "runtime": name if v is None else f"{name} ({v['precision']}, {v['status']})",
                    "variant": None if v is None else v["variant"],
                    "file_mb": None if v is None else v["file_bytes"] / 1e6,
                    "agreement": gate.get("top1_agreement"),
                    "accuracy": gate.get("accuracy_candidate", None),
                    "accuracy_ref": gate.get("accuracy_reference", None),
                    **t,
                }
            )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(report: dict) -> None:
    print(
        "| cell | runtime | p50 ms | p99 ms | img/s | ×eager p50 | ×eager img/s | MB "
        "| top-1 agree | acc (eager) |"
    )
    print("|" + "---|" * 10)
    for r in _variant_rows(report):
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.1%} ({r['accuracy_ref']:.1%})"
        print(
            f"| {r['cell']} | {r['runtime']} | {r['latency_ms_p50']:.2f} | "
            f"{r['latency_ms_p99']:.2f} | {r['throughput_img_s']:.1f} | "
            f"{r['speedup_p50_vs_eager']:.2f} | {r['throughput_ratio_vs_eager']:.2f} | "
            f"{_fmt(r['file_mb'], '.1f')} | {_fmt(r['agreement'], '.1%')} | {acc} |"
        )


EAGER_FP32_MB = 537.3  # model.safetensors of the 10-class VGG16 (134.3M fp32 parameters)


def plot(report: dict, dest: Path) -> None:
    """The latency × size × agreement trade-off, one panel per (size, batch) cell.

    x: p50 latency (log), y: file size (log); the legend gives each point's speed-up over eager
    and its held-out top-1 agreement, so the best corner (fast, small, 100%) is bottom left.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    rows = _variant_rows(report)
    cells = list(report["timing"])
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4.6))
    for ax, cell in zip(np.atleast_1d(axes), cells, strict=True):
        cell_rows = sorted(
            (r for r in rows if r["cell"] == cell), key=lambda r: r["latency_ms_p50"]
        )
        for i, r in enumerate(cell_rows):
            name = r["runtime"].split(" ")[0].removeprefix("model.").removesuffix(".onnx")
            mb = r["file_mb"] or EAGER_FP32_MB
            agree = "" if r["agreement"] is None else f", {100 * r['agreement']:.1f}% top-1"
            rejected = "rejected" in r["runtime"]
            tag = " (rejected)" if rejected else ""
            ax.scatter(
                r["latency_ms_p50"],
                mb,
                s=70,
                marker="x" if rejected else "o",
                color="grey" if name == "eager" else f"C{i}",
                label=f"{name}{tag}: {r['speedup_p50_vs_eager']:.1f}×{agree}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(15, 1500)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7, loc="upper left")
        ax.set_xlabel("p50 latency per call, ms (log)")
        ax.set_ylabel("artifact size, MB (log)")
        ax.set_title(f"{cell.replace('_', ', ')}: faster ← → slower")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("tlx optimize variants vs eager fp32 (legend: speed-up, held-out top-1 agreement)")
    fig.tight_layout()
    tmp = dest.with_name(".tmp-" + dest.name)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, dest)


if __name__ == "__main__":
    main()

"""Benchmark the `tlx optimize` variants against eager PyTorch fp32, interleaved, on the CPU.

Usage::

    .venv/bin/python benchmarks/optimize_bench.py --out benchmarks/optimize_runs

1. A 32 px run trained briefly on the synthetic shapes dataset with ``exporter.train.fit``
   (``--weights none``: no download; frozen random trunk, trained head), and a 224 px run
   trained with ``exporter.train.fit`` and the demo's recipe (feature cache, 400 images).
2. ``optimize_run`` builds and gates the variants on held-out images (the gate's top-1
   agreement and accuracy are the numbers in the table).
3. Every variant (``ort-cpu``) and eager (``eager``), both from the runtime registry, are
   timed by ``exporter.bench.measure.time_runtimes``: interleaved rounds (rounds × runtimes,
   the start rotating, so machine drift hits all of them alike); medians and p99 of the
   per-call latencies are reported.

Writes ``<out>/optimize_bench.json`` and ``--plot`` (``benchmarks/pareto.png``); prints a
Markdown table.

Smoke run (numbers meaningless; an optimized 32 px run copied to ``<out>/synthetic32``, e.g.
one made by ``benchmarks/speed_bars.py``)::

    .venv/bin/python benchmarks/optimize_bench.py --out /tmp/ob --sizes 32 --skip-build \
        --rounds 1 --plot /tmp/ob/pareto.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREADS = 2

if TYPE_CHECKING:
    from exporter.runtimes import Artifact, Runtime


def make_runs(
    out: Path, *, steps: int, sizes: tuple[str, ...] | list[str] = ("32", "224")
) -> tuple[Path, Path]:
    """A head-trained 32 px synthetic run and a head-trained 224 px run (made if missing and
    in ``sizes``; both paths are returned).

    ``exporter.train.fit`` exists, but 2 epochs of it from random weights reached only 22%
    val accuracy with near-flat logits, so the 32 px run trains the head directly (Adam on the
    frozen trunk's features, as tests/optimize/test_optimize.py does): ~85% val accuracy in seconds.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _make_run_folder as make_run_folder

    run32 = out / "synthetic32"
    if "32" in sizes and not (run32 / "model.safetensors").exists():
        make_run_folder(run32, image_size=32, train_size=1000, val_size=500, seed=1)
        train_head(run32, n_train=1000, steps=steps)
    run224 = out / "trained224"
    if "224" in sizes and not (run224 / "model.safetensors").exists():
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


def load_runtimes(run: Path, variants: list[dict]) -> dict[str, Runtime]:
    """Eager fp32 and every built variant, loaded from the runtime registry (eager, ort-cpu).

    Shipped variants come from the manifest (hash-checked as ``tlx bench`` checks them);
    rejected ones are not listed there, so their file under ``rejected/`` is hashed here.
    """
    from exporter.runtimes import get_runtime
    from exporter.runtimes.selection import artifacts_of_run

    listed = {a.name: a for a in artifacts_of_run(run)}
    arts = {"eager fp32": listed["model.safetensors"]}
    for v in variants:
        arts[v["path"]] = listed.get(v["path"]) or _kept_aside(run, v["path"], v["precision"])
    loaded: dict[str, Runtime] = {}
    try:
        for label, art in arts.items():
            runtime = "eager" if art.format == "safetensors" else "ort-cpu"
            loaded[label] = get_runtime(runtime)(art, "cpu", threads=THREADS)
            loaded[label].load()
    except BaseException:
        close_all(loaded)
        raise
    return loaded


def _kept_aside(run: Path, rel: str, precision: str) -> Artifact:
    """A variant ``tlx optimize`` kept in ``rejected/``: the artifact of the file as it is now."""
    from exporter.core.manifest import FileRecord
    from exporter.core.runfolder import open_run
    from exporter.runtimes import Artifact

    info, rec = open_run(run), FileRecord.of(run, rel)
    return Artifact(
        run_dir=info.run_dir,
        name=rel,
        format="onnx",
        precision=precision,
        num_classes=info.num_classes,
        image_size=info.preprocessing.image_size,
        sha256=rec.sha256,
        files=((rec.path, rec.sha256, rec.bytes),),
    )


def close_all(runtimes: dict[str, Runtime]) -> None:
    for runtime in runtimes.values():
        runtime.close()


def time_interleaved(
    runtimes: dict[str, Runtime], x: np.ndarray, *, rounds: int, per_round: int
) -> dict:
    """Latency statistics per runtime, timed by ``exporter.bench`` (2 warm-up calls each)."""
    from exporter.bench.measure import time_runtimes

    samples = time_runtimes(runtimes, x, rounds=rounds, per_round=per_round, warmup=2)
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


# size -> (variants built, held-out images of the gate, batch sizes timed)
SIZES = {
    "32": (("fold", "int8", "int8-dynamic", "fold-int8"), 500, (1, 64)),
    "224": (("fold", "int8"), 256, (1,)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "optimize_runs")
    ap.add_argument("--steps", type=int, default=100, help="Adam steps training the head")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--skip-build", action="store_true", help="reuse variants already built")
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"any of {','.join(SIZES)}")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "pareto.png")
    ap.add_argument(
        "--plot-only", type=Path, metavar="JSON", help="redraw the plot from a saved report"
    )
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(args.plot_only.read_text()), args.plot)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in SIZES for s in sizes):
        ap.error(f"--sizes {args.sizes!r}: choose from {', '.join(SIZES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    from exporter.core.envinfo import environment

    runs = dict(zip(SIZES, make_runs(args.out, steps=args.steps, sizes=sizes), strict=True))
    report_path = args.out / "optimize_bench.json"
    built = built_variants(report_path, runs, sizes, reuse=args.skip_build)
    report = {
        "schema_version": 1,
        "command": " ".join(sys.argv),
        "environment": environment("cpu"),
        "threads": THREADS,
        "built": built,
        "timing": time_sizes(runs, built, sizes, rounds=args.rounds),
    }
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    plot(report, args.plot)


def built_variants(
    report_path: Path, runs: dict[str, Path], sizes: list[str], *, reuse: bool
) -> dict:
    """Each size's variants: optimized now, or (``--skip-build``) as the last report or the
    run's own ``optimize.json`` recorded them."""
    if not reuse:
        built = {}
        for size in sizes:
            variants, eval_samples, _ = SIZES[size]
            print(f"optimize {size} px", file=sys.stderr)
            built[size] = optimize(runs[size], variants, eval_samples=eval_samples)
        return built
    saved = json.loads(report_path.read_text())["built"] if report_path.is_file() else {}
    for size in sizes:
        if size not in saved:
            made = json.loads((runs[size] / "optimize.json").read_text())["variants"]
            saved[size] = {v["variant"]: v for v in made}
    return {size: saved[size] for size in sizes}


def time_sizes(runs: dict[str, Path], built: dict, sizes: list[str], *, rounds: int) -> dict:
    """Every (size, batch) cell: eager and each built variant, interleaved, vs eager."""
    results = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        # Rejected variants are timed too (from rejected/), so the table shows what was lost.
        variants = [v for v in built[size].values() if v["status"] != "skipped"]
        runtimes = load_runtimes(runs[size], variants)
        try:
            for batch in SIZES[size][2]:
                x = rng.standard_normal((batch, 3, int(size), int(size))).astype(np.float32)
                per_round = 20 if batch == 1 and size == "32" else 3
                print(f"timing {size} px batch {batch}", file=sys.stderr)
                cell = time_interleaved(runtimes, x, rounds=rounds, per_round=per_round)
                base = cell["eager fp32"]
                for c in cell.values():
                    c["speedup_p50_vs_eager"] = base["latency_ms_p50"] / c["latency_ms_p50"]
                    c["throughput_ratio_vs_eager"] = (
                        c["throughput_img_s"] / base["throughput_img_s"]
                    )
                results[f"{size}px_b{batch}"] = cell
        finally:
            close_all(runtimes)
    return results


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

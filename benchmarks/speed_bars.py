"""The speed bars of issue 15, measured in one interleaved run and checked against the bar.

Cells (CPU, ``--threads`` threads, inputs of the run's size):

- 32 px batch 1 (bar: best tlx artifact ≥ 20× eager), 32 px batch 64 (≥ 8×), 224 px batch 1
  (≥ 5×); in every cell the best tlx artifact must also be at least as fast as OpenVINO
  running the plain fp32 ``model.onnx`` (what a user would try without tlx).
- "best tlx artifact" = the fastest of the run's *shipped* ``tlx optimize`` variants (those in
  ``manifest.json``) and ``model.onnx`` on ONNX Runtime, on any tlx runtime (``ort-cpu``,
  ``openvino``); eager = PyTorch fp32 from ``model.safetensors``. Every candidate runs through
  the runtime registry, i.e. exactly what ``tlx bench`` and ``tlx serve`` run.
- Timing (``exporter.bench.measure.time_runtimes``, the timer of ``tlx bench``): every
  candidate of a cell is loaded and warmed up, then timed in rounds (each round visits every
  candidate for a few calls, starting one candidate later each round), so machine drift hits
  all alike; medians of the per-call latencies, ratios of medians.
- Feature cache: head training at 224 px for 5 epochs with the cache on vs off, end to end
  (``benchmarks/train_bench.py``'s ``run_once``; bar ≥ 4×). Skipped with ``--no-train-bar``.

Runs: ``--run32`` / ``--run224`` take existing run folders (trained, exported, optimized);
without them the runs of ``benchmarks/optimize_bench.py`` are made in ``--out`` (a 32 px head
trained on synthetic shapes, a 224 px run trained by ``tlx train``'s ``fit``), exported to ONNX
and optimized with ``tlx optimize``'s defaults.

Usage (the lead's numbers; an idle machine, ~40 min with the training bar)::

    .venv/bin/python benchmarks/speed_bars.py --out /tmp/speed-bars \
        --json benchmarks/speed_bars.json

Smoke run (minutes, numbers meaningless)::

    .venv/bin/python benchmarks/speed_bars.py --out /tmp/sb --rounds 1 --no-train-bar --cells 32b1
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# cell -> (image size, batch, minimum speed-up of the best tlx artifact over eager)
CELLS = {"32b1": (32, 1, 20.0), "32b64": (32, 64, 8.0), "224b1": (224, 1, 5.0)}
TRAIN_BAR = 4.0
EAGER = "eager"
OV_FP32 = ("openvino", "model.onnx")
TLX_RUNTIMES = ("ort-cpu", "openvino")


@dataclass
class Candidate:
    runtime: str
    artifact: str
    role: str  # "eager", "tlx" or "openvino-fp32"
    rt: Any = None
    samples_ms: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.artifact}"


def candidates(run: Path) -> list[Candidate]:
    """Eager, every shipped ONNX artifact on every tlx runtime, and OpenVINO on model.onnx."""
    from exporter.runtimes.selection import artifacts_of_run

    out = [Candidate(EAGER, "model.safetensors", "eager")]
    for art in artifacts_of_run(run):
        if art.format != "onnx" or art.precision == "fp16":
            continue  # fp16 is slower than fp32 on CPUs without fp16 arithmetic
        for runtime in TLX_RUNTIMES:
            if (runtime, art.name) == OV_FP32:
                out.append(Candidate(runtime, art.name, "openvino-fp32"))
            elif art.name != "model.onnx" or runtime == "ort-cpu":
                out.append(Candidate(runtime, art.name, "tlx"))
    return out


def load(cands: list[Candidate], run: Path, threads: int) -> None:
    from exporter.runtimes import get_runtime
    from exporter.runtimes.selection import artifacts_of_run

    arts = {a.name: a for a in artifacts_of_run(run)}
    for c in cands:
        c.rt = get_runtime(c.runtime)(arts[c.artifact], "cpu", threads=threads)
        c.rt.load()


def time_cell(
    cands: list[Candidate], x: np.ndarray, *, rounds: int, per_round: int, warmup: int
) -> None:
    """Interleaved timing by ``exporter.bench``: rounds × candidates, the start rotating."""
    from exporter.bench.measure import time_runtimes

    runtimes = {c.label: c.rt for c in cands}
    samples = time_runtimes(runtimes, x, rounds=rounds, per_round=per_round, warmup=warmup)
    for c in cands:
        c.samples_ms = samples[c.label]


def cell_report(name: str, cands: list[Candidate]) -> dict[str, Any]:
    size, batch, bar = CELLS[name]
    med = {c.label: float(np.median(c.samples_ms)) for c in cands}
    eager = next(c for c in cands if c.role == "eager")
    tlx = min((c for c in cands if c.role == "tlx"), key=lambda c: med[c.label])
    ov = next((c for c in cands if c.role == "openvino-fp32"), None)
    speedup = med[eager.label] / med[tlx.label]
    ov_ratio = med[ov.label] / med[tlx.label] if ov else None
    return {
        "cell": name,
        "image_size": size,
        "batch_size": batch,
        "samples_per_candidate": len(eager.samples_ms),
        "median_ms": med,
        "p90_ms": {c.label: float(np.percentile(c.samples_ms, 90)) for c in cands},
        "speedup_vs_eager": {c.label: med[eager.label] / med[c.label] for c in cands},
        "best_tlx": tlx.label,
        "best_tlx_speedup_vs_eager": speedup,
        "bar_speedup_vs_eager": bar,
        "passes_speedup_bar": speedup >= bar,
        "openvino_fp32_over_best_tlx": ov_ratio,
        "passes_openvino_bar": ov_ratio is not None and ov_ratio >= 1.0,
    }


def measure_cells(
    runs: dict[int, Path], names: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(args.threads)
    reports = []
    by_size: dict[int, list[str]] = {}
    for name in names:
        by_size.setdefault(CELLS[name][0], []).append(name)
    for size, cell_names in by_size.items():
        cands = candidates(runs[size])
        print(f"loading {len(cands)} candidates at {size} px", file=sys.stderr)
        load(cands, runs[size], args.threads)
        try:
            for name in cell_names:
                batch = CELLS[name][1]
                for c in cands:
                    c.samples_ms.clear()
                x = np.random.default_rng(0).standard_normal(
                    (batch, 3, size, size), dtype=np.float32
                )
                # Aim at about the same timed wall per candidate for cheap and costly cells.
                per_round = args.per_round or (20 if (size, batch) == (32, 1) else 2)
                print(f"timing {name}: {args.rounds} rounds x {per_round}", file=sys.stderr)
                time_cell(cands, x, rounds=args.rounds, per_round=per_round, warmup=args.warmup)
                reports.append(cell_report(name, cands))
        finally:
            for c in cands:
                c.rt.close()
    return reports


def train_bar(args: argparse.Namespace) -> dict[str, Any]:
    """Head training at 224 px, 5 epochs, feature cache on vs off (end-to-end wall time)."""
    import tempfile

    from train_bench import run_once

    from exporter.core.config import DataConfig, TrainConfig, to_dict

    cfg = TrainConfig(
        data=DataConfig(
            source="synthetic",
            train_size=args.train_size,
            val_size=args.val_size,
            image_size=224,
            augment="off",
        ),
        weights="none",
        epochs=5,
        batch_size=64,
        lr=1e-3,
        save_every=5,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlx-speed-bars-") as tmp:
        for r in range(args.train_rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                print(f"train bar round {r}: cache {mode}", file=sys.stderr)
                rows.append({**run_once(cfg, mode, Path(tmp)), "round": r})
    wall = {
        m: float(np.median([x["wall_s"] for x in rows if x["mode"] == m])) for m in ("on", "off")
    }
    return {
        "config": to_dict(cfg),
        "runs": rows,
        "median_wall_s": wall,
        "speedup_x": wall["off"] / wall["on"],
        "bar_x": TRAIN_BAR,
        "passes": wall["off"] / wall["on"] >= TRAIN_BAR,
    }


def prepare_runs(args: argparse.Namespace, sizes: set[int]) -> dict[int, Path]:
    """The 32/224 px runs: given ones, or optimize_bench's runs made, exported and optimized."""
    runs: dict[int, Path] = {}
    if 32 in sizes and args.run32:
        runs[32] = args.run32
    if 224 in sizes and args.run224:
        runs[224] = args.run224
    missing = sizes - set(runs)
    if missing:
        from optimize_bench import make_runs

        from exporter.core.config import ExportConfig, OptimizeConfig
        from exporter.export.export import export_run
        from exporter.optimize.optimize import optimize_run

        args.out.mkdir(parents=True, exist_ok=True)
        made32, made224 = make_runs(args.out, steps=100)
        for size, run in ((32, made32), (224, made224)):
            if size not in missing:
                continue
            if not (run / "model.onnx").exists():
                export_run(run, ExportConfig(formats=("onnx",)))
            if not (run / "optimize.json").exists():
                optimize_run(run, OptimizeConfig())
            runs[size] = run
    return runs


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"speed bars, {report['created_at']}, {report['threads']} threads, "
        f"{report['rounds']} interleaved rounds per cell",
        "",
        "| cell | eager ms | best tlx (artifact, runtime) | ms | × eager | bar | "
        "OpenVINO fp32 ms | OV fp32 / best tlx | ≥ 1 |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for c in report["cells"]:
        med = c["median_ms"]
        eager = med[f"{EAGER} model.safetensors"]
        ov = med.get(" ".join(OV_FP32))
        ratio = c["openvino_fp32_over_best_tlx"]
        lines.append(
            f"| {c['cell']} | {eager:.2f} | {c['best_tlx']} | {med[c['best_tlx']]:.3f} | "
            f"{c['best_tlx_speedup_vs_eager']:.2f}× | ≥ {c['bar_speedup_vs_eager']:g}× "
            f"{'PASS' if c['passes_speedup_bar'] else 'MISS'} | "
            f"{'-' if ov is None else f'{ov:.3f}'} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | "
            f"{'PASS' if c['passes_openvino_bar'] else 'MISS'} |"
        )
    lines.append("")
    for c in report["cells"]:
        lines.append(f"{c['cell']}, every candidate (median ms, × eager):")
        for label, ms in sorted(c["median_ms"].items(), key=lambda kv: kv[1]):
            lines.append(f"- {label}: {ms:.3f} ms, {c['speedup_vs_eager'][label]:.2f}×")
        lines.append("")
    tb = report.get("train_bar")
    if tb:
        lines.append(
            f"feature cache, 224 px, 5 epochs: on {tb['median_wall_s']['on']:.1f} s, off "
            f"{tb['median_wall_s']['off']:.1f} s, {tb['speedup_x']:.2f}× (bar ≥ {tb['bar_x']:g}×: "
            f"{'PASS' if tb['passes'] else 'MISS'})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/tlx-speed-bars"), help="made runs")
    ap.add_argument("--run32", type=Path, help="an optimized 32 px run folder to use")
    ap.add_argument("--run224", type=Path, help="an optimized 224 px run folder to use")
    ap.add_argument("--cells", default=",".join(CELLS), help=f"any of {','.join(CELLS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=0, help="calls per round (0: by cell)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-train-bar", action="store_true")
    ap.add_argument("--train-rounds", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--val-size", type=int, default=200)
    ap.add_argument("--json", type=Path, help="write the full report here")
    args = ap.parse_args()
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        ap.error(f"--cells: unknown {unknown}; choose from {', '.join(CELLS)}")
    from datetime import datetime, timezone

    from exporter.core.envinfo import environment

    runs = prepare_runs(args, {CELLS[n][0] for n in names})
    report: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment("cpu"),
        "threads": args.threads,
        "rounds": args.rounds,
        "runs": {str(k): str(v) for k, v in runs.items()},
        "cells": measure_cells(runs, names, args),
    }
    if not args.no_train_bar:
        report["train_bar"] = train_bar(args)
    text = markdown(report)
    print(text)
    if args.json:
        report["markdown"] = text
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

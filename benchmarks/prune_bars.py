"""The bars of ``tlx optimize --prune`` on a real transfer task, measured end to end.

Accuracy (``--phase accuracy``): the teacher is a trained 32 px run (e.g. ``tlx train`` on
``transfer_data.py``'s Fashion-MNIST ``fashion59`` task with its pretrained trunk). For each
ratio the run is copied (weights hard-linked) and ``tlx optimize RUN --prune R`` runs through
the CLI with every held-out image as the gate set; the exit code and optimize.json's numbers
(accuracy, drop with its 95 % interval, agreement, params, MACs) are recorded. ``--prune 0.95``
must be rejected (exit 1, files in ``rejected/``).

Speed (``--phase speed``, on an idle machine): cells 32 px batch 1, 32 px batch 64 (the
teacher run that shipped a pruned variant, plus ``tlx optimize``'s exact variants) and 224 px
batch 1 (the structure's speed: a 224 px run with random weights, optimized with the same
ratio and a one-epoch distillation, since accuracy is shown at 32 px). Every shipped ONNX
artifact runs on ORT and OpenVINO, eager PyTorch is the baseline; timing is
``exporter.bench.measure.time_runtimes`` (interleaved rounds, medians).

Bars (issue: pruning): shipped pruned variant ≥ 25× eager at 32b1, ≥ 10× at 32b64, ≥ 6× at
224b1, and ≥ 2× the best unpruned artifact on any runtime in every cell; drop ≤ 1.0 point.

Usage::

    python benchmarks/prune_bars.py --phase accuracy --teacher RUN32 --work /tmp/pb \\
        --ratios 0.5,0.6,0.75 --json benchmarks/results/prune_accuracy.json
    python benchmarks/prune_bars.py --phase speed --run32 /tmp/pb/r0.50 --ratio 0.5 \\
        --work /tmp/pb --json benchmarks/results/prune_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CELLS = {"32b1": (32, 1, 25.0), "32b64": (32, 64, 10.0), "224b1": (224, 1, 6.0)}
VS_UNPRUNED = 2.0
PRUNED = ("model.pruned.onnx", "model.pruned.int8.onnx")


def tlx(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "exporter", *args]
    print("$ tlx " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def copy_run(src: Path, dest: Path) -> Path:
    """The trained run's weights and records, hard-linked (tlx replaces files, never edits)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("model.safetensors", "train.json"):
        os.link(src / name, dest / name)
    return dest


def accuracy_phase(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for ratio in [*args.ratios, 0.95]:
        run = copy_run(args.teacher, args.work / f"r{ratio:.2f}")
        t0 = time.perf_counter()
        proc = tlx("optimize", str(run), "--prune", str(ratio), "--eval-samples",
                   str(args.eval_samples), "--distill-epochs", str(args.epochs), "-q")  # fmt: skip
        wall = time.perf_counter() - t0
        report = json.loads((run / "optimize.json").read_text())
        row = {"ratio": ratio, "exit_code": proc.returncode, "wall_s": round(wall, 1),
               "stderr_tail": proc.stderr[-400:], "variants": []}  # fmt: skip
        for v in report["variants"]:
            g, p = v["gate"], v["prune"]
            row["variants"].append({
                "variant": v["variant"], "status": v["status"], "path": v["path"],
                "accuracy_pct": 100 * g["accuracy_candidate"],
                "teacher_accuracy_pct": 100 * g["accuracy_reference"],
                "delta_points": g["accuracy_delta_points"],
                "ci95_points": [g["accuracy_difference"]["ci95_low_points"],
                                g["accuracy_difference"]["ci95_high_points"]],
                "agreement_pct": 100 * g["top1_agreement"],
                "params": p["params"], "macs": p["macs"], "teacher_macs": p["teacher_macs"],
                "file_mb": v["file_bytes"] / 1e6, "distill_s": v["distill"]["seconds"],
                "reason": v["reason"],
            })  # fmt: skip
        row["timing_p50_ms_b1"] = report["timing"]["p50_ms"]
        rows.append(row)
        print(json.dumps(row["variants"], indent=1), file=sys.stderr)
    return {"teacher": str(args.teacher), "eval_samples": args.eval_samples,
            "distill_epochs": args.epochs, "ratios": rows}  # fmt: skip


def make_run224(work: Path, ratio: float) -> Path:
    """A 224 px run (random weights: the structure's speed), exported, optimized, pruned.

    Random weights make int8's top-1 flip on some images, so the unpruned int8 file may be
    rejected by its gate (exit 1): it is still timed, from ``rejected/``.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _make_run_folder

    run = work / "run224"
    if not (run / "train.json").exists():
        _make_run_folder(run, image_size=224, train_size=64, val_size=32)
    steps = (
        ("model.onnx", (0,), ("export", str(run), "--format", "onnx", "-q")),
        ("model.int8.onnx", (0, 1), ("optimize", str(run), "--variants", "int8", "-q")),
        ("model.pruned.int8.onnx", (0,),
         ("optimize", str(run), "--prune", str(ratio), "--distill-epochs", "1",
          "--distill-samples", "32", "--max-drop", "100", "--min-agreement", "0", "-q")),
    )  # fmt: skip
    for product, ok, args in steps:
        if (run / product).exists() or (run / "rejected" / product).exists():
            continue
        proc = tlx(*args)
        if proc.returncode not in ok:
            raise SystemExit(f"tlx {' '.join(args)} failed: {proc.stderr[-800:]}")
    return run


def speed_phase(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from speed_bars import candidates, load, time_cell

    torch.set_num_threads(args.threads)
    run32 = args.run32
    if not (run32 / "model.onnx").exists():
        tlx("export", str(run32), "--format", "onnx", "-q")
    if not (run32 / "model.fold.int8.onnx").exists():  # the best unpruned artifacts
        tlx("optimize", str(run32), "-q")
    runs = {32: run32, 224: make_run224(args.work, args.ratio)}
    cells = []
    for size in (32, 224):
        cands = candidates(runs[size])
        load(cands, runs[size], args.threads)
        cands += rejected_candidates(runs[size], args.threads)
        try:
            for name, (s, batch, bar) in CELLS.items():
                if s != size:
                    continue
                for c in cands:
                    c.samples_ms.clear()
                x = np.random.default_rng(0).standard_normal((batch, 3, size, size), np.float32)
                per_round = 20 if (size, batch) == (32, 1) else 2
                print(f"timing {name}", file=sys.stderr, flush=True)
                time_cell(cands, x, rounds=args.rounds, per_round=per_round, warmup=3)
                cells.append(cell(name, bar, cands))
        finally:
            for c in cands:
                c.rt.close()
    return {"run32": str(run32), "run224": str(runs[224]), "threads": args.threads,
            "rounds": args.rounds, "cells": cells}  # fmt: skip


def rejected_candidates(run: Path, threads: int) -> list[Any]:
    """Unpruned files the gate kept aside (random 224 px weights flip int8's top-1): their
    speed is the structure's, so they still count as "the best unpruned artifact"."""
    from speed_bars import Candidate

    from exporter.core.runfolder import open_run
    from exporter.optimize.timing import Timed, file_artifact
    from exporter.runtimes import get_runtime

    info, out = open_run(run), []
    for path in sorted((run / "rejected").glob("*.onnx")):
        if path.name in PRUNED:
            continue
        rel = f"rejected/{path.name}"
        precision = "int8" if ".int8" in path.name else "fp32"
        art = file_artifact(info, Timed(rel, rel, precision, fixed_hw="fold" in path.name))
        for runtime in ("ort-cpu", "openvino"):
            c = Candidate(runtime, rel, "tlx")
            c.rt = get_runtime(runtime)(art, "cpu", threads=threads)
            c.rt.load()
            out.append(c)
    return out


def cell(name: str, bar: float, cands: list[Any]) -> dict[str, Any]:
    med = {c.label: float(np.median(c.samples_ms)) for c in cands}
    eager = next(c.label for c in cands if c.role == "eager")
    pruned = [c.label for c in cands if c.artifact in PRUNED]
    unpruned = [c.label for c in cands if c.role != "eager" and c.artifact not in PRUNED]
    best_p = min(pruned, key=med.__getitem__)
    best_u = min(unpruned, key=med.__getitem__)
    return {
        "cell": name,
        "median_ms": med,
        "eager_ms": med[eager],
        "best_pruned": best_p,
        "best_pruned_ms": med[best_p],
        "best_unpruned": best_u,
        "best_unpruned_ms": med[best_u],
        "pruned_x_eager": med[eager] / med[best_p],
        "pruned_x_best_unpruned": med[best_u] / med[best_p],
        "bar_x_eager": bar,
        "passes": med[eager] / med[best_p] >= bar and med[best_u] / med[best_p] >= VS_UNPRUNED,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", choices=("accuracy", "speed"), required=True)
    ap.add_argument("--teacher", type=Path, help="accuracy: the trained 32 px run")
    ap.add_argument("--ratios", default="0.5", help="accuracy: comma-separated ratios")
    ap.add_argument("--epochs", type=int, default=6, help="accuracy: --distill-epochs")
    ap.add_argument("--eval-samples", type=int, default=500)
    ap.add_argument("--run32", type=Path, help="speed: a 32 px run with a shipped pruned variant")
    ap.add_argument("--ratio", type=float, default=0.5, help="speed: the 224 px structure's ratio")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tlx-prune-bars"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    from exporter.core.envinfo import environment

    body = accuracy_phase(args) if args.phase == "accuracy" else speed_phase(args)
    report = {
        "command": " ".join(sys.argv),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m": os.getloadavg()[0],
        "environment": environment("cpu"),
        **body,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

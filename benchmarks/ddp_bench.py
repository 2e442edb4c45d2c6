"""Training throughput on 1 vs N processes (``tlx train --nproc``), same global batch, interleaved.

Each round runs ``tlx train`` once per process count (order alternating between rounds) in a
fresh run folder, and reads back from train.json the training images/s of every epoch after
the first (the first carries the feature-cache build and warm-up), each rank's own images/s,
and the wall time of the whole command (process start, data, model, cache, training,
evaluation, checkpoints). Medians over rounds go to a JSON report; the speed-up is relative
to the first process count. On CPU, N processes share the cores (``OMP_NUM_THREADS`` is set
to cores / N by ``tlx train --nproc``), so this measures what DDP costs and gains on one
machine, not more hardware.

Usage (CPU, gloo; needs a quiet machine)::

    .venv/bin/python benchmarks/ddp_bench.py --image-size 32 --train-size 2048 \
        --val-size 256 --epochs 3 --rounds 2 --cache-features off \
        --out artifacts/ddp-bench-32-nocache.json

    # on a node with several GPUs (NCCL):
    .venv/bin/python benchmarks/ddp_bench.py --device cuda --nproc-list 1,8 --image-size 224 \
        --train-size 8192 --epochs 2 --rounds 1 --out artifacts/ddp-bench-224-gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_once(args: argparse.Namespace, nproc: int, root: Path) -> dict[str, Any]:
    out = root / f"n{nproc}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "exporter", "train", "--data", "synthetic", "--weights", "none"]
    cmd += ["--image-size", str(args.image_size), "--train-size", str(args.train_size)]
    cmd += ["--val-size", str(args.val_size), "--epochs", str(args.epochs), "--quiet"]
    cmd += ["--batch-size", str(args.batch_size), "--device", args.device, "--no-augment"]
    cmd += ["--cache-features", args.cache_features, "--out", str(out)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    record = json.loads((out / "train.json").read_text())
    shutil.rmtree(out, ignore_errors=True)  # ~2 GB of weights and checkpoint per run
    steady = record["epochs"][1:] or record["epochs"]
    return {
        "nproc": nproc,
        "wall_s": round(wall, 2),
        "train_images_per_s": statistics.median(e["images_per_s"] for e in steady),
        "per_rank_images_per_s": record["distributed"]["per_rank_images_per_s"],
        "backend": record["distributed"]["backend"],
        "final_val_accuracy": record["epochs"][-1]["val_accuracy"],
    }


def summarize(rows: list[dict[str, Any]], counts: list[int]) -> list[dict[str, Any]]:
    out = []
    for n in counts:
        mine = [r for r in rows if r["nproc"] == n]
        out.append(
            {
                "nproc": n,
                "rounds": len(mine),
                "wall_s_median": statistics.median(r["wall_s"] for r in mine),
                "train_images_per_s_median": statistics.median(
                    r["train_images_per_s"] for r in mine
                ),
                "per_rank_images_per_s_last": mine[-1]["per_rank_images_per_s"],
                "backend": mine[-1]["backend"],
            }
        )
    base = out[0]["train_images_per_s_median"]
    for row in out:
        row["speedup_vs_first"] = round(row["train_images_per_s_median"] / max(base, 1e-9), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc-list", default="1,2", help="process counts to compare, e.g. 1,2")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--cache-features", default="off", choices=("auto", "on", "off"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from exporter.core.envinfo import environment
    from exporter.core.fsio import write_json

    counts = [int(n) for n in args.nproc_list.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlx-ddp-bench-") as tmp:
        for r in range(args.rounds):
            for n in counts if r % 2 == 0 else counts[::-1]:
                rows.append(run_once(args, n, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    report = {
        "benchmark": "ddp_bench",
        "command": " ".join(sys.argv),
        "config": vars(args) | {"out": str(args.out)},
        "environment": environment(args.device),
        "rows": rows,
        "summary": summarize(rows, counts),
    }
    write_json(args.out, report)
    for row in report["summary"]:
        print(
            f"{row['nproc']} process(es): {row['train_images_per_s_median']:.1f} img/s "
            f"(x{row['speedup_vs_first']}), wall {row['wall_s_median']:.1f} s, per rank "
            f"{row['per_rank_images_per_s_last']}"
        )


if __name__ == "__main__":
    main()

"""Head training with and without the feature cache: same data, same seed, interleaved.

Each round runs ``fit()`` once with ``cache_features="on"`` and once with ``"off"`` (the
order alternates between rounds), in fresh run folders, and records end-to-end wall time
(model build, cache build, training, evaluation, checkpoints), training images/s and final
val accuracy. Medians over rounds go to a JSON report; paste the table into RESULTS.md.

Usage::

    .venv/bin/python benchmarks/train_bench.py --image-size 32 --train-size 5000 \
        --val-size 500 --epochs 5 --rounds 2 --out artifacts/train-bench-32.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from exporter.core.config import DataConfig, TrainConfig, to_dict
from exporter.core.envinfo import environment
from exporter.core.fsio import write_json
from exporter.train import fit


def run_once(cfg: TrainConfig, mode: str, root: Path) -> dict[str, Any]:
    out = root / f"{mode}-{time.monotonic_ns()}"
    t = time.perf_counter()
    result = fit(replace(cfg, cache_features=mode, out=str(out)))
    wall = time.perf_counter() - t
    epochs = result.epochs
    train_images = sum(result.record["dataset"]["train_size"] for _ in epochs)
    row = {
        "mode": mode,
        "wall_s": round(wall, 2),
        "train_images_per_s_median": statistics.median(e["images_per_s"] for e in epochs),
        "end_to_end_images_per_s": round(train_images / wall, 2),
        "final_val_accuracy": epochs[-1]["val_accuracy"],
        "cache_build_s": result.record["feature_cache"].get("build_seconds"),
    }
    shutil.rmtree(out, ignore_errors=True)  # 1.5 GB of weights and checkpoint per run
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    cfg = TrainConfig(
        data=DataConfig(
            source="synthetic",
            train_size=a.train_size,
            val_size=a.val_size,
            image_size=a.image_size,
            augment=False,
        ),
        weights="none",
        epochs=a.epochs,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        lr=a.lr,
        save_every=a.epochs,  # one checkpoint at the end: same I/O for both modes
    )
    rows: list[dict[str, Any]] = []
    # Run folders (~1.5 GB each) go to the system temp dir, never into the checkout.
    with tempfile.TemporaryDirectory(prefix="tlx-train-bench-") as tmp:
        for r in range(a.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for mode in order:
                row = run_once(cfg, mode, Path(tmp))
                row["round"] = r
                rows.append(row)
                print(row, flush=True)
    med = {
        mode: {
            k: statistics.median(x[k] for x in rows if x["mode"] == mode)
            for k in ("wall_s", "train_images_per_s_median", "end_to_end_images_per_s")
        }
        for mode in ("on", "off")
    }
    report = {
        "schema_version": 1,
        "command": "train_bench",
        "config": to_dict(cfg),
        "rounds": a.rounds,
        "environment": environment("cpu"),
        "runs": rows,
        "median": med,
        "speedup_wall_x": round(med["off"]["wall_s"] / med["on"]["wall_s"], 2),
    }
    write_json(a.out, report)
    print(report["median"], "speedup (wall, off/on):", report["speedup_wall_x"])


if __name__ == "__main__":
    main()

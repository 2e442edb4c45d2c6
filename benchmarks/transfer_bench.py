"""Real-transfer benchmark: does ``tlx train`` learn from a pretrained trunk?

Builds (once, offline) the tasks and trunk of ``transfer_data.py``, then, per task and seed:

- ``tlx-head``: ``tlx train --data imagefolder --weights TRUNK`` with its defaults, 3 epochs;
- ``tlx-finetune``: the same with ``--recipe finetune``, 5 epochs;
- ``plain-loop``: the seed's recipe as a plain PyTorch loop (torchvision VGG16 + the trunk,
  features frozen, new ``classifier[6]``, SGD 0.01 momentum 0.9, constant LR, no
  augmentation, batch 64), 3 epochs;
- ``plain-random``: that loop on a random trunk;
- with ``--lr-grid``: ``tlx-head`` at the other LRs of a grid and with ``--lr auto``.

Every tlx run goes through the CLI in a subprocess, exactly as a user types it. Accuracy is
the best epoch's validation accuracy for every recipe (what tlx ships; the final epoch's is
recorded too). Results: ``transfer_bench.json`` + a Markdown summary on stdout.

    python benchmarks/transfer_bench.py --seeds 0,1,2 --lr-grid --out benchmarks/transfer_bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transfer_data import IMAGE_SIZE, make_tasks, pretrain_trunk

HEAD_EPOCHS = 3
FINETUNE_EPOCHS = 5
# Around the default peak LR (1e-3, which tlx-head runs): --lr-grid adds these.
LR_GRID = (3e-4, 3e-3)


def run_tlx(task_dir: Path, trunk: Path, args: list[str], *, seed: int, epochs: int, work: Path):
    """One ``tlx train`` run through the CLI; returns its numbers and removes the run folder."""
    out = work / "runs" / f"{task_dir.name}-s{seed}-{abs(hash(tuple(args))) % 10**8}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "exporter", "train", "--data", "imagefolder",
        "--data-dir", str(task_dir), "--weights", str(trunk), "--image-size", str(IMAGE_SIZE),
        "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), "--quiet",
        "--save-every", str(epochs),  # one checkpoint at the end: ~1.6 GB less I/O per epoch
        *args,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"tlx train failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr}")
    record = json.loads((out / "train.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    hist = record["epochs"]
    return {
        "best_val_accuracy": record["best"]["val_accuracy"],
        "final_val_accuracy": hist[-1]["val_accuracy"],
        "per_epoch": [e["val_accuracy"] for e in hist],
        "wall_s": round(wall, 1),
        "recipe": record.get("recipe"),
        "lr": record["config"]["lr"],
        "lr_finder": (record.get("lr_finder") or {}).get("chosen_lr"),
        "lr_finder_seconds": (record.get("lr_finder") or {}).get("seconds"),
        "total_seconds": record.get("total_seconds"),
    }


def plain_loop(task_dir: Path, trunk: Path | None, *, seed: int, epochs: int = HEAD_EPOCHS):
    """The seed's ten-line recipe, written as plainly as a user would."""
    import torch
    from torchvision.datasets import ImageFolder
    from torchvision.models import vgg16

    from exporter.core.preprocess import Preprocessing

    torch.manual_seed(seed)
    tf = Preprocessing(image_size=IMAGE_SIZE).eval_transform()
    train = ImageFolder(str(task_dir / "train"), transform=tf)
    val = ImageFolder(str(task_dir / "val"), transform=tf)
    t0 = time.perf_counter()
    model = vgg16(weights=None)
    if trunk is not None:
        model.load_state_dict(torch.load(trunk, map_location="cpu", weights_only=True))
    for p in model.features.parameters():
        p.requires_grad = False
    model.classifier[6] = torch.nn.Linear(4096, len(train.classes))
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9, fused=True
    )
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, generator=g)
    vloader = torch.utils.data.DataLoader(val, batch_size=256)
    accs = []
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in vloader:
                correct += int((model(x).argmax(1) == y).sum())
        accs.append(correct / len(val))
    return {
        "best_val_accuracy": max(accs),
        "final_val_accuracy": accs[-1],
        "per_epoch": accs,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def summarize(runs: list[dict], tasks: list[str], recipes: list[str]) -> str:
    lines = [
        "| task | recipe | mean best val acc | per seed | mean wall s |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for task in tasks:
        for recipe in recipes:
            rs = [r for r in runs if r["task"] == task and r["recipe_name"] == recipe]
            if not rs:
                continue
            accs = [r["best_val_accuracy"] for r in rs]
            lines.append(
                f"| {task} | {recipe} | {statistics.mean(accs):.3f} | "
                + " ".join(f"{a:.3f}" for a in accs)
                + f" | {statistics.mean(r['wall_s'] for r in rs):.1f} |"
            )
    return "\n".join(lines)


def check_bars(runs: list[dict], tasks: list[str]) -> str:
    """The issue's bars, per task: margins over seeds (points of accuracy)."""

    def acc(task: str, recipe: str) -> dict[int, float]:
        return {
            r["seed"]: r["best_val_accuracy"]
            for r in runs
            if r["task"] == task and r["recipe_name"] == recipe
        }

    lines = []
    for task in tasks:
        head, plain = acc(task, "tlx-head"), acc(task, "plain-loop")
        tune = acc(task, "tlx-finetune")
        seeds = sorted(set(head) & set(plain))
        if seeds:
            margins = [100 * (head[s] - plain[s]) for s in seeds]
            lines.append(
                f"{task}: head-only − plain loop = {statistics.mean(margins):+.1f} points "
                f"(min over seeds {min(margins):+.1f}; bar: mean ≥ +5, never < 0)"
            )
        seeds = sorted(set(head) & set(tune))
        if seeds:
            gain = statistics.mean(100 * (tune[s] - head[s]) for s in seeds)
            lines.append(f"{task}: finetune − head-only = {gain:+.1f} points (bar: ≥ +10)")
        grid = {"1e-3 (default)": head}
        for lr in LR_GRID:
            grid[f"{lr:g}"] = acc(task, f"tlx-head lr={lr:g}")
        auto = acc(task, "tlx-head lr=auto")
        if auto and all(grid.values()):
            means = {k: statistics.mean(v.values()) for k, v in grid.items()}
            best = max(means, key=means.get)
            gap = 100 * (statistics.mean(auto.values()) - means[best])
            lines.append(
                f"{task}: --lr auto − best grid LR ({best}) = {gap:+.1f} points "
                f"(bar: ≥ −2); grid means " + ", ".join(f"{k}: {v:.3f}" for k, v in means.items())
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="artifacts/transfer-bench", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default="fashion59,digits")
    ap.add_argument("--recipes", default="tlx-head,tlx-finetune,plain-loop,plain-random")
    ap.add_argument("--lr-grid", action="store_true", help="tlx-head over LR_GRID and --lr auto")
    ap.add_argument(
        "--extra", action="append", default=[], metavar="NAME=ARGS",
        help="an extra tlx recipe: a name and its CLI arguments (3 epochs unless --epochs given)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    tasks = make_tasks(a.work)
    trunk = pretrain_trunk(a.work)
    seeds = [int(s) for s in a.seeds.split(",")]
    recipes: dict[str, tuple[list[str], int] | str] = {}
    for name in a.recipes.split(","):
        if name == "tlx-head":
            recipes[name] = ([], HEAD_EPOCHS)
        elif name == "tlx-finetune":
            recipes[name] = (["--recipe", "finetune"], FINETUNE_EPOCHS)
        elif name in ("plain-loop", "plain-random"):
            recipes[name] = name
        elif name:
            raise SystemExit(f"unknown recipe {name}")
    if a.lr_grid:
        for lr in LR_GRID:
            recipes[f"tlx-head lr={lr:g}"] = (["--lr", str(lr)], HEAD_EPOCHS)
        recipes["tlx-head lr=auto"] = (["--lr", "auto"], HEAD_EPOCHS)
    for spec in a.extra:
        name, _, args = spec.partition("=")
        argv = shlex.split(args)
        epochs = HEAD_EPOCHS
        if "--epochs" in argv:
            i = argv.index("--epochs")
            epochs = int(argv[i + 1])
            del argv[i : i + 2]
        recipes[name] = (argv, epochs)
    runs = []
    for seed in seeds:  # seeds outermost: a partial run still covers every task
        for task in a.tasks.split(","):
            for name, spec in recipes.items():
                if spec == "plain-loop":
                    r = plain_loop(tasks[task], trunk, seed=seed)
                elif spec == "plain-random":
                    r = plain_loop(tasks[task], None, seed=seed)
                else:
                    args, epochs = spec
                    r = run_tlx(tasks[task], trunk, args, seed=seed, epochs=epochs, work=a.work)
                r.update(task=task, seed=seed, recipe_name=name)
                runs.append(r)
                print(
                    f"{task} seed {seed} {name}: best {r['best_val_accuracy']:.3f} "
                    f"final {r['final_val_accuracy']:.3f} ({r['wall_s']} s)"
                    + (f" lr_finder chose {r['lr_finder']:.2e}" if r.get("lr_finder") else ""),
                    flush=True,
                )
    table = summarize(runs, a.tasks.split(","), list(recipes))
    bars = check_bars(runs, a.tasks.split(","))
    print(table)
    print(bars)
    table += "\n\n" + bars
    if a.out:
        import os

        a.out.write_text(
            json.dumps(
                {
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": {
                        "cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(),
                        "load_average_at_end": os.getloadavg(),
                    },
                    "command": shlex.join(sys.argv),
                    "trunk": json.loads((a.work / "trunk_fashion0-4.json").read_text()),
                    "runs": runs,
                    "summary_markdown": table,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()

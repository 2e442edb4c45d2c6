"""Issue 25's bar: ``tlx predict --engine ray`` vs in-process on the same cores, interleaved.

    python benchmarks/ray_bar.py RUN [--images DIR] [--rounds 3] [--variant pruned-int8]

One local Ray (``--cpus``, default 2) is started here once and kept for every round, as a
cluster is in use (its start is printed, not counted), configured as ``tlx predict --engine
ray`` starts its local Ray and as the README starts a cluster: workers at normal priority,
preloading Ray Data and the predictor (``--no-preload``: Ray's defaults for the preload).
Each round runs, in fresh processes and alternating which goes first:

- in-process: ``predict_images`` + the CSV written (model load and the lazy imports of the
  preprocessing included: what ``tlx predict --format csv`` does after its own imports);
- Ray: ``predict_ray`` on that cluster (``ray.init(address=...)`` done first): Ray Data's
  planning, the actors' start (process, imports, model load), the pipeline, the file written.

``--actor-start N``: instead, N fresh processes each do one actor's own work before its
first rows, without Ray (import the actor's module, ``exporter.load``, the first task of
224 images), printing wall and CPU seconds: the part of an actor's start that is tlx's (the
Ray worker's own start, importing ray and Ray Data, comes on top).

Timed from the call to the file closed, in both. Prints each round, the medians, the ratio
(Ray img/s / in-process img/s; the bar is >= 0.7) and whether the rows are identical
(source, rank, class and the printed probability). Images: 2,000 Fashion-MNIST test images
(28x28 PNG, Debian's dataset-fashion-mnist) and one corrupt file, written to DIR when missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import json, sys, time
from exporter.core.config import PredictConfig
mode, run, images, out, address, cfg = sys.argv[1:7]
cfg = PredictConfig(**json.loads(cfg))
if mode == "ray":
    import ray
    ray.init(address=address, log_to_driver=False)
    from exporter.serve.ray_predict import predict_ray
    t = time.perf_counter()
    r = predict_ray(run, [images], cfg, output=out, progress=False)
    extra = {"first_rows_s": r.first_rows_s, "actors": r.actors, "threads": r.threads}
else:
    from exporter.serve.predict import predict_images, render_csv
    first = []
    t = time.perf_counter()
    r = predict_images(run, [images], cfg, on_error=lambda b: None,
                       progress=lambda *a: first.append(time.perf_counter()))
    with open(out, "w") as fh:
        fh.write(render_csv(r))
    extra = {"first_rows_s": first[0] - t}
print("RESULT " + json.dumps({"s": time.perf_counter() - t, **extra}))
"""


ACTOR = r"""
import glob, json, resource, sys, time
t = time.perf_counter()
import numpy as np
from exporter.core.config import PredictConfig
from exporter.serve.ray_predict import _Classify
run, images, variant = sys.argv[1:4]
actor = _Classify(run, PredictConfig(variant=variant, threads=1), variant, False, {})
paths = np.array(sorted(glob.glob(images + "/*.png"))[:224])
actor({"source": paths, "path": paths})
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": time.perf_counter() - t, "cpu": r.ru_utime + r.ru_stime,
                  "torch": "torch" in sys.modules}))
"""


def actor_start(args: argparse.Namespace) -> None:
    """One actor's own work before its first rows, in fresh processes, without Ray."""
    for i in range(args.actor_start):
        proc = subprocess.run(
            [sys.executable, "-c", ACTOR, str(args.run), str(args.images), args.variant],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        got = json.loads(proc.stdout.splitlines()[-1])
        print(
            f"actor start {i + 1}: {got['s']:.2f} s wall, {got['cpu']:.2f} s CPU, torch "
            f"imported: {got['torch']}; load {os.getloadavg()[0]:.2f}"
        )


def make_images(folder: Path, n: int) -> None:
    sys.path.insert(0, str(HERE))
    from PIL import Image
    from transfer_data import load_fashion

    x, _ = load_fashion("test")
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(x[i]).save(folder / f"{i:05d}.png")
    (folder / "corrupt.png").write_bytes(b"not a png")


def rows(path: Path) -> list[tuple[str, str, str, str]]:
    with open(path, newline="") as fh:
        return [
            (r["source"], r["rank"], r["class"], f"{float(r['probability']):.6f}")
            for r in csv.DictReader(fh)
        ]


def child(mode: str, args: argparse.Namespace, out: Path, address: str) -> dict[str, float]:
    cfg = {"variant": args.variant, "top_k": 5, "batch_size": args.batch_size}
    if mode == "ray" and args.threads:
        cfg["threads"] = args.threads
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(args.run), str(args.images), str(out), address,
         json.dumps(cfg)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not found:
        raise SystemExit(f"{mode} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(found[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--images", type=Path, default=Path("/tmp/tlx-ray-imgs"))
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tlx-ray-out"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", default="pruned-int8")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="Ray: threads per actor")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--actor-start", type=int, default=0, metavar="N", help="see above")
    ap.add_argument(
        "--no-preload", action="store_true", help="workers import nothing before their actor"
    )
    args = ap.parse_args()
    if not args.images.is_dir():
        make_images(args.images, args.count)
    if args.actor_start:
        actor_start(args)
        return
    n = len(list(args.images.iterdir()))
    args.out.mkdir(parents=True, exist_ok=True)

    import ray

    from exporter.serve.ray_predict import PRELOAD

    # As the local Ray `tlx predict --engine ray` starts (and as the README starts a cluster):
    # workers at the driver's priority (Ray's default lowers them by 15; on a busy machine
    # in-process would get ~7x their CPU), importing Ray Data and the predictor before work.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if not args.no_preload:
        os.environ.setdefault("RAY_preload_python_modules", PRELOAD)
    t = time.perf_counter()
    ctx = ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(
        f"local Ray with {args.cpus} CPUs started in {time.perf_counter() - t:.1f} s (not counted)"
    )
    times: dict[str, list[float]] = {"local": [], "ray": []}
    first: dict[str, list[float]] = {"local": [], "ray": []}
    same = True
    try:
        for i in range(args.rounds):
            order = ("local", "ray") if i % 2 == 0 else ("ray", "local")
            line = []
            for mode in order:
                out = args.out / f"{mode}.csv"
                got = child(mode, args, out, ctx.address_info["address"])
                times[mode].append(got["s"])
                more = (
                    f"; {got['actors']} actors x {got['threads']} threads" if mode == "ray" else ""
                )
                first[mode].append(got["first_rows_s"])
                line.append(
                    f"{mode} {got['s']:.2f} s = {n / got['s']:.1f} img/s (first batch after "
                    f"{got['first_rows_s']:.2f} s{more})"
                )
            identical = rows(args.out / "local.csv") == rows(args.out / "ray.csv")
            same &= identical
            load = os.getloadavg()[0]
            print(f"round {i + 1}: {'; '.join(line)}; rows identical: {identical}; load {load:.2f}")
    finally:
        ray.shutdown()
    med = {m: statistics.median(v) for m, v in times.items()}
    ratio = med["local"] / med["ray"]
    print(
        f"medians: in-process {med['local']:.2f} s ({n / med['local']:.1f} img/s), Ray "
        f"{med['ray']:.2f} s ({n / med['ray']:.1f} img/s); Ray / in-process = {ratio:.2f}x "
        f"(bar 0.7x: {'met' if ratio >= 0.7 else 'NOT met'}); rows identical in every round: {same}"
    )
    # After the first batch: the steady rate, without the model load and the actors' start.
    rest = {
        m: statistics.median(t - f for t, f in zip(times[m], first[m], strict=True)) for m in times
    }
    print(
        f"after the first batch: in-process {rest['local']:.2f} s, Ray {rest['ray']:.2f} s "
        f"(ratio {rest['local'] / rest['ray']:.2f}x); start (first batch): in-process "
        f"{statistics.median(first['local']):.2f} s, Ray {statistics.median(first['ray']):.2f} s"
    )


if __name__ == "__main__":
    main()

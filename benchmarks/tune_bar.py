"""`tlx serve` with `tlx tune`'s plan vs serve's defaults: load-test throughput and p99.

Two hard-linked copies of RUN, one with RUN/tune.json (from `tlx tune RUN --budget B`), one
without; each round starts `tlx serve` on one copy, runs `tlx loadtest` (closed loop, the
given concurrency levels), stops it, then the other copy (order alternates per round).
Compared at the default's best concurrency: median throughput over the rounds and its p99.

Usage: python benchmarks/tune_bar.py RUN SCRATCH [--rounds 3] [--budget 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

LEVELS = "2,4,8,16"


def tlx(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    # Their output goes to stderr: stdout is the JSON summary alone.
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], text=True, stdout=sys.stderr, **kw
    )


def copy(src: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    for name in ("tune.json", "loadtest.json", "rejected"):
        p = dest / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


def serve_and_load(run: Path, out: Path, port: int) -> dict:
    cmd = [sys.executable, "-m", "exporter", "serve", str(run), "--http-port", str(port),
           "--grpc-port", str(port + 1), "--metrics-port", str(port + 2)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = ""
    for line in server.stdout:
        if line.startswith("ready:"):
            ready = line.strip()
            break
    try:
        tlx("loadtest", str(run), "--server", f"http://127.0.0.1:{port}", "--concurrency",
            LEVELS, "--out", str(out), "-q", check=False)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=120)
    report = json.loads((out / "loadtest.json").read_text())
    return {"ready": ready, "levels": report["rows"]}


def level(result: dict, concurrency: int) -> dict:
    return next(x for x in result["levels"] if x["concurrency"] == concurrency)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("scratch", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0)
    args = ap.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    tuned = copy(args.run, args.scratch / "tuned")
    default = copy(args.run, args.scratch / "default")
    tlx("tune", str(tuned), "--budget", str(args.budget), "-q", check=True)
    plan = json.loads((tuned / "tune.json").read_text())["plan"]
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for r in range(args.rounds):
        order = ("default", "tuned") if r % 2 == 0 else ("tuned", "default")
        for name in order:
            run = default if name == "default" else tuned
            out = args.scratch / f"{name}-{r}"
            out.mkdir(exist_ok=True)
            runs[name].append(serve_and_load(run, out, 18800 + 10 * r))
    keys = ("throughput_img_s", "latency_ms_p99")
    print(json.dumps(runs["default"][0]["levels"][0], indent=1)[:800], file=sys.stderr)

    def median_throughput(c: int) -> float:
        return statistics.median(level(d, c)[keys[0]] or 0.0 for d in runs["default"])

    best = max((x["concurrency"] for x in runs["default"][0]["levels"]), key=median_throughput)
    summary = {
        "plan": plan,
        "ready": {k: v[0]["ready"] for k, v in runs.items()},
        "best_concurrency_of_default": best,
        **{
            k: {
                "throughput_img_s": [level(d, best)[keys[0]] for d in v],
                "p99_ms": [level(d, best)[keys[1]] for d in v],
            }
            for k, v in runs.items()
        },
    }
    med = {k: statistics.median(summary[k]["throughput_img_s"]) for k in runs}
    p99 = {k: statistics.median(summary[k]["p99_ms"]) for k in runs}
    summary["median_throughput"] = med
    summary["median_p99_ms"] = p99
    summary["passes"] = med["tuned"] >= med["default"] and p99["tuned"] <= 1.1 * p99["default"]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

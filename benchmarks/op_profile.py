"""Where the time goes: a per-operator profile of one ONNX artifact on ORT and OpenVINO (CPU).

ONNX Runtime's own profiler (``SessionOptions.enable_profiling``: one JSON event per node
run) and OpenVINO's performance counters (``PERF_COUNT``: per compiled node, with the kernel
it chose, e.g. ``jit_avx2_I8`` vs ``jit_avx2_FP32``) are summed per operator type over the
timed runs, with the same session settings tlx uses (exporter.runtimes.ort.cpu_session;
the openvino runtime's hints). Shares are of each runtime's own total, so the profile is
meaningful on a busy machine too; absolute times are not.

Usage::

    .venv/bin/python benchmarks/op_profile.py RUN/model.fold.int8.onnx --batch 1 --runs 50
    .venv/bin/python benchmarks/op_profile.py RUN/model.int8.onnx --batch 1 --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def input_of(path: Path, batch: int) -> np.ndarray:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    h, w = dims[2].dim_value, dims[3].dim_value
    return np.random.default_rng(0).standard_normal((batch, 3, h, w), dtype=np.float32)


def ort_profile(path: Path, x: np.ndarray, *, runs: int, threads: int) -> dict[str, Any]:
    """Per-op-type time of ORT's CPU provider over ``runs`` runs (after 3 warm-ups)."""
    from exporter.runtimes.ort_sessions import cpu_session

    warmup = 3
    with tempfile.TemporaryDirectory() as tmp:
        sess = cpu_session(path, threads=threads, profile_prefix=os.path.join(tmp, "ort"))
        name = sess.get_inputs()[0].name
        for _ in range(warmup + runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs_ev = sorted(
        (ev for ev in events if ev.get("cat") == "Session" and ev.get("name") == "model_run"),
        key=lambda ev: ev["ts"],
    )
    cutoff = runs_ev[warmup]["ts"]  # the warm-up runs (first-run allocations) are left out
    model_us = sum(ev["dur"] for ev in runs_ev[warmup:])
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for ev in events:
        if (
            ev.get("cat") == "Node"
            and ev.get("name", "").endswith("_kernel_time")
            and ev["ts"] >= cutoff
        ):
            op = ev.get("args", {}).get("op_name", "?")
            by_op[op] += ev["dur"]
            count[op] += 1
    return _table(by_op, count, runs=runs, total_us=model_us)


def ov_profile(path: Path, x: np.ndarray, *, runs: int, threads: int) -> dict[str, Any]:
    """Per-(node type, kernel) time of OpenVINO's CPU plugin, static batch, LATENCY hint."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({0: list(x.shape)})
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True,
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.real_time.total_seconds() <= 0:
                continue
            key = f"{info.node_type} [{info.exec_type}]"
            by_op[key] += info.real_time.total_seconds() * 1e6
            count[key] += 1
    return _table(by_op, count, runs=runs, total_us=sum(by_op.values()))


def _table(
    by_op: dict[str, float], count: dict[str, int], *, runs: int, total_us: float
) -> dict[str, Any]:
    ops_us = sum(by_op.values())
    rows = [
        {
            "op": op,
            "ms_per_run": us / runs / 1e3,
            "share_pct": 100.0 * us / ops_us if ops_us else None,
            "nodes_per_run": count[op] / runs,
        }
        for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])
    ]
    return {
        "runs": runs,
        "ops_ms_per_run": ops_us / runs / 1e3,
        "run_ms_per_run": total_us / runs / 1e3,
        "rows": rows,
    }


def print_profile(title: str, prof: dict[str, Any], *, top: int) -> None:
    print(
        f"\n### {title}: ops {prof['ops_ms_per_run']:.3f} ms/run, "
        f"whole run {prof['run_ms_per_run']:.3f} ms/run ({prof['runs']} runs)\n"
    )
    print("| op | ms/run | share | nodes/run |")
    print("| --- | ---: | ---: | ---: |")
    for r in prof["rows"][:top]:
        print(
            f"| {r['op']} | {r['ms_per_run']:.3f} | {r['share_pct']:.1f}% | "
            f"{r['nodes_per_run']:.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", type=Path, help="also write both profiles here")
    args = ap.parse_args()
    x = input_of(args.onnx, args.batch)
    out = {
        "file": str(args.onnx),
        "batch": args.batch,
        "threads": args.threads,
        "ort": ort_profile(args.onnx, x, runs=args.runs, threads=args.threads),
        "openvino": ov_profile(args.onnx, x, runs=args.runs, threads=args.threads),
    }
    name = f"{args.onnx.name} batch {args.batch}"
    print_profile(f"ONNX Runtime, {name}", out["ort"], top=args.top)
    print_profile(f"OpenVINO, {name}", out["openvino"], top=args.top)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

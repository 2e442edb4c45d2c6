"""Where the time goes: a per-operator profile of one ONNX artifact on ORT and OpenVINO (CPU).

A thin wrapper over the library (``tlx bench --profile`` runs the same code on every ONNX
artifact × runtime of a run): ``exporter.bench.op_profile.profile_pairs`` loads each runtime on
the artifact (after its manifest hash check), asks for its own profiler (ONNX Runtime's
``enable_profiling`` trace, OpenVINO's ``PERF_COUNT`` counters, with the kernel each node
chose, e.g. ``jit_avx2_I8`` vs ``jit_avx2_FP32``) and groups the node times by operator type
and by layer, flagging the convolutions and matrix products of an int8 model that ran in
fp32. Shares are of each runtime's own total, so the profile is meaningful on a busy machine
too; absolute times are not.

Usage::

    .venv/bin/python benchmarks/op_profile.py RUN/model.fold.int8.onnx --batch 1 --runs 50
    .venv/bin/python benchmarks/op_profile.py RUN/model.int8.onnx --batch 1 --runs 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from exporter.bench.op_profile import profile_lines, profile_pairs
    from exporter.runtimes import REGISTRY, load_all
    from exporter.runtimes.selection import artifacts_of_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path, help="an ONNX artifact listed in its run's manifest")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="default: the usable cores")
    ap.add_argument("--runtimes", default="ort-cpu,openvino")
    ap.add_argument("--json", type=Path, help="also write the profiles here")
    args = ap.parse_args()
    from exporter.core.machine import usable_cpus

    load_all()
    artifact = next(
        (a for a in artifacts_of_run(args.onnx.parent) if a.name == args.onnx.name), None
    )
    if artifact is None:
        sys.exit(f"{args.onnx}: not an artifact of {args.onnx.parent}/manifest.json")
    size = artifact.image_size
    x = np.random.default_rng(0).standard_normal((args.batch, 3, size, size), dtype=np.float32)
    threads = args.threads or usable_cpus()
    pairs = [(REGISTRY[name], artifact) for name in args.runtimes.split(",")]
    profile = profile_pairs(pairs, device="cpu", threads=threads, x=x, runs=args.runs)
    print("\n".join(profile_lines(profile)))
    if args.json:
        out = {"file": str(args.onnx), "batch": args.batch, "threads": threads, "profile": profile}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Per-node times from a runtime's own profiler: what ``tlx bench --profile`` groups.

A runtime that has a profiler overrides :meth:`Runtime.profile
<exporter.runtimes.base.Runtime.profile>` and returns a :class:`RawProfile`; the parsing of each
profiler's output lives here, free of sessions so it can be tested on recorded traces:

- ONNX Runtime (``SessionOptions.enable_profiling``): a Chrome-trace JSON, one ``Node``
  event ``<node>_kernel_time`` per node run, with the op type and the execution provider in
  its ``args``; ``Session``/``model_run`` events bound each run.
- OpenVINO (``PERF_COUNT``): per compiled node, the node type and the kernel it chose
  (``exec_type``, e.g. ``brgconv_avx512_I8`` vs ``jit_avx2_FP32``), with its real time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PROFILE_WARMUP = 3  # first runs allocate and pick kernels: left out of the profile


@dataclass(frozen=True)
class NodeTime:
    """One graph node's time summed over the profiled runs.

    Attributes:
        node: the node's name (the layer, after the runtime's graph fusions).
        op_type: its operator type (``QLinearConv``, ``Conv``; OpenVINO: ``Convolution``).
        kernel: where it ran: ORT's execution provider, OpenVINO's kernel (``exec_type``).
        total_us: microseconds over all profiled runs.
        calls: how many times it ran in them.
    """

    node: str
    op_type: str
    kernel: str
    total_us: float
    calls: int


@dataclass
class RawProfile:
    """What one runtime's profiler saw over ``runs`` runs of one input batch."""

    profiler: str
    runs: int
    nodes: list[NodeTime] = field(default_factory=list)
    run_us: float | None = None  # whole-run time over the runs, when the profiler gives it


def parse_ort_trace(events: list[dict[str, Any]], *, warmup: int, runs: int) -> RawProfile:
    """Sum ORT's ``Node`` kernel events per node, after the first ``warmup`` model runs."""
    model_runs = sorted(
        (ev for ev in events if ev.get("cat") == "Session" and ev.get("name") == "model_run"),
        key=lambda ev: ev["ts"],
    )
    cutoff = model_runs[warmup]["ts"] if len(model_runs) > warmup else 0
    run_us = sum(float(ev.get("dur", 0)) for ev in model_runs[warmup:]) or None
    timed = []
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time") or ev["ts"] < cutoff:
            continue
        args = ev.get("args", {})
        op, provider = str(args.get("op_name", "?")), str(args.get("provider", "?"))
        timed.append(((name.removesuffix("_kernel_time"), op, provider), float(ev.get("dur", 0))))
    return RawProfile(profiler="onnxruntime", runs=runs, nodes=_summed(timed), run_us=run_us)


def sum_openvino_counters(per_run: list[list[Any]], *, runs: int) -> RawProfile:
    """Sum OpenVINO's ``get_profiling_info()`` lists (one per run) per node."""
    timed = (
        ((str(i.node_name), str(i.node_type), str(i.exec_type)), i.real_time.total_seconds() * 1e6)
        for infos in per_run
        for i in infos
    )
    # A time of 0 is a node not executed (constant folded, fused away).
    nodes = _summed((key, us) for key, us in timed if us > 0)
    return RawProfile(profiler="openvino PERF_COUNT", runs=runs, nodes=nodes)


def _summed(timed: Iterable[tuple[tuple[str, str, str], float]]) -> list[NodeTime]:
    """One :class:`NodeTime` per (node, op type, kernel): its microseconds and calls summed."""
    total: dict[tuple[str, str, str], float] = defaultdict(float)
    calls: dict[tuple[str, str, str], int] = defaultdict(int)
    for key, us in timed:
        total[key] += us
        calls[key] += 1
    return [NodeTime(*key, us, calls[key]) for key, us in total.items()]

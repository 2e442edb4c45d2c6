"""The serving plan a Kubernetes manifest asks for: cores, instances, threads, concurrency.

Where a number was measured it is taken from the run, never guessed:

- ``RUN/loadtest.json`` (``tlx loadtest`` against ``tlx serve``, loopback only, so on the
  server's machine): the model instances the server reported, the cores of that machine,
  and the concurrency level where throughput stopped growing.
- without a load test: ``tlx serve``'s own default plan (``serve.server.instance_plan``) on
  :data:`MEASURED_CORES` cores, the plan benchmarks/RESULTS.md measured (2 instances x 1
  thread served 0.87x of in-process ORT, 1 x 2 threads 0.67x).

The pod's CPU request and limit are ``instances x threads``: every session's thread pool fits
the limit instead of starting a thread per core of the node (kserve/kserve #1031).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.core.choices import CUDA, device_kind
from exporter.core.errors import InputFileError
from exporter.core.runfolder import LOADTEST_JSON as LOADTEST_FILE

# The cores the default serve plan was measured on (benchmarks/RESULTS.md, 2026-12-01).
MEASURED_CORES = 2
# Knative's target is the in-flight requests per pod the autoscaler aims for. Without a load
# test: two per instance, one computing and one waiting in the dynamic batcher's queue.
DEFAULT_REQUESTS_PER_INSTANCE = 2
# The target is the lowest level reaching this share of the best throughput: past it, more
# requests in flight only add queueing latency.
KNEE_SHARE = 0.9


@dataclass(frozen=True)
class ServingPlan:
    """What one pod runs and how the autoscaler loads it.

    Attributes:
        cores: the pod's CPU request and limit (whole cores).
        instances: Triton model instances in the pod.
        threads: intra-op threads per instance (``cores // instances``).
        target_concurrency: Knative's per-pod concurrency target.
        gpus: GPUs per pod (0 on the CPU).
        source: where the numbers come from, for the report and the manifests' annotations.
    """

    cores: int
    instances: int
    threads: int
    target_concurrency: int
    gpus: int
    source: str


def serving_plan(run_dir: Path, device: str) -> ServingPlan:
    """The plan for ``device`` from the run's load test, else serve's measured default.

    Raises:
        InputFileError: ``loadtest.json`` exists but is not a tlx load test report.
    """
    from exporter.core.config import TritonConfig
    from exporter.serve.server import instance_plan

    gpus = 1 if device_kind(device) == CUDA else 0
    report = _loadtest(run_dir / LOADTEST_FILE)
    cores, served, target = report or (MEASURED_CORES, None, None)
    instances, threads = instance_plan(TritonConfig(device=device, instances=served), cores=cores)
    threads = threads or max(1, cores // instances)
    if report is None:
        source = (
            f"tlx serve's default plan as measured on {cores} cores (benchmarks/RESULTS.md); "
            "no loadtest.json in the run"
        )
    else:
        source = f"{LOADTEST_FILE}: {served} instance(s) on {cores} cores" + (
            f", throughput within {KNEE_SHARE:.0%} of its best at concurrency {target}"
            if target
            else ""
        )
    return ServingPlan(
        # Every instance's thread pool fits the CPU limit (the default plan's does already).
        cores=max(cores, instances * threads) if gpus == 0 else cores,
        instances=instances,
        threads=threads,
        target_concurrency=target or DEFAULT_REQUESTS_PER_INSTANCE * instances,
        gpus=gpus,
        source=source,
    )


def _loadtest(path: Path) -> tuple[int, int, int | None] | None:
    """``(cores, instances, knee concurrency)`` from a load test report, or None without one."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        cores = int(report["environment"]["cpu_count"])
        instances = int(report["setup"]["served"]["instances"])
        rows = list(report.get("rows") or [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            f"{path} is not a tlx load test report ({exc}); run `tlx loadtest` again or remove it"
        ) from exc
    if cores < 1 or instances < 1:
        raise InputFileError(f"{path}: cpu_count {cores} and instances {instances} must be >= 1")
    return cores, instances, knee_concurrency(rows)


def knee_concurrency(rows: list[dict[str, Any]]) -> int | None:
    """The lowest concurrency whose throughput is within :data:`KNEE_SHARE` of the best.

    Only levels that counted (stable, no failed request) take part; None when none did.
    """
    clean = [
        r
        for r in rows
        if r.get("stable") and not r.get("errors") and r.get("throughput_img_s") is not None
    ]
    if not clean:
        return None
    best = max(float(r["throughput_img_s"]) for r in clean)
    return min(
        int(r["concurrency"]) for r in clean if float(r["throughput_img_s"]) >= KNEE_SHARE * best
    )

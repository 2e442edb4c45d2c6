"""Wall-clock of every variant ``tlx optimize`` built, on this machine, with bench's timer.

A pruned model is only worth shipping if it is faster where it will run, not in MACs (NNCF's
users reported pruned models that were no faster, openvinotoolkit/nncf #1191). Each file —
shipped or rejected — and the trained model (eager, and ``model.onnx`` when exported) is
timed at batch 1 in interleaved rounds (:func:`exporter.bench.measure.time_runtimes`, the
same timer as ``tlx bench``) on each CPU runtime that can load it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.errors import RuntimeUnavailable
from exporter.core.machine import usable_cpus

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.runtimes.base import Artifact, Runtime

ROUNDS = 5
PER_ROUND = 8
WARMUP = 3
ONNX_RUNTIMES = ("ort-cpu", "openvino")


@dataclass(frozen=True)
class Timed:
    """One file to time: its label in the report, path in the run, precision, fixed size."""

    label: str
    path: str
    precision: str
    fixed_hw: bool = False


def time_variants(info: Run, files: list[Timed], *, batch: int = 1) -> dict[str, Any]:
    """p50/p90 latency (ms) of each file on each ONNX CPU runtime, plus the eager model.

    Returns:
        ``{"batch": b, "threads": t, "p50_ms": {label: {runtime: ms}}, "skipped": [...]}``;
        a runtime that cannot load a file here is listed under ``skipped`` with the reason.
    """
    from exporter.bench.measure import time_runtimes
    from exporter.runtimes.base import get_runtime
    from exporter.runtimes.selection import reference_artifact

    threads = usable_cpus()  # affinity and cgroup quota, not the node's count
    size = info.preprocessing.image_size
    live: dict[str, tuple[str, str, Runtime]] = {}
    skipped: list[dict[str, str]] = []
    eager = get_runtime("eager")(
        reference_artifact(info, info.manifest if info.has_manifest else None),
        "cpu",
        threads=threads,
    )
    _load(eager, "trained model", live, skipped)
    for f in files:
        art = file_artifact(info, f)
        for name in ONNX_RUNTIMES:
            runtime = get_runtime(name)(art, "cpu", precision=f.precision, threads=threads)
            _load(runtime, f.label, live, skipped)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    try:
        samples = time_runtimes(
            {k: rt for k, (_, _, rt) in live.items()},
            x,
            rounds=ROUNDS,
            per_round=PER_ROUND,
            warmup=WARMUP,
        )
    finally:
        for _, _, rt in live.values():
            rt.close()
    table: dict[str, dict[str, float]] = {}
    for key, (label, runtime, _) in live.items():
        table.setdefault(label, {})[runtime] = round(float(np.median(samples[key])), 3)
    return {"batch": batch, "threads": threads, "p50_ms": table, "skipped": skipped}


def _load(
    runtime: Runtime,
    label: str,
    live: dict[str, tuple[str, str, Runtime]],
    skipped: list[dict[str, str]],
) -> None:
    try:
        runtime.load()
    except RuntimeUnavailable as exc:
        skipped.append({"file": label, "runtime": runtime.name, "reason": str(exc)})
        return
    live[f"{label} · {runtime.name}"] = (label, runtime.name, runtime)


def file_artifact(info: Run, f: Timed) -> Artifact:
    """An ONNX file of the run (listed in the manifest or not) as an artifact, hashed now."""
    from exporter.core.manifest import FileRecord
    from exporter.runtimes.base import Artifact

    rec = FileRecord.of(info.run_dir, f.path)
    return Artifact(
        run_dir=info.run_dir,
        name=f.path,
        format="onnx",
        precision=f.precision,
        num_classes=info.num_classes,
        image_size=info.preprocessing.image_size,
        fixed_hw=f.fixed_hw,
        sha256=rec.sha256,
        files=((rec.path, rec.sha256, rec.bytes),),
    )

"""What ``tlx bench`` measured: cells, runtimes, the report, and the latency statistics.

Shared by :mod:`exporter.bench.bench` (which measures) and :mod:`exporter.bench.report`
(which writes and gates), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.config import BenchConfig, to_dict
from exporter.core.machine import machine_facts

BENCH_SCHEMA_VERSION = 1
THROUGHPUT_BASIS = "batch_size / latency_ms_p50"
LATENCY_SCOPE = (
    "run(prepared input) + synchronize; excludes the host-to-device input copy and the "
    "output copy to host"
)
MIN_SAMPLES = 5  # with --min-time, a cell also needs this many samples for its percentiles
PERCENTILES = (50, 90, 95, 99)
OK, OOM, ERROR, SKIPPED = "ok", "oom", "error", "skipped"
STAT_KEYS = (
    *(f"latency_ms_p{p}" for p in PERCENTILES),
    *(f"latency_ms_{s}" for s in ("mean", "std", "min", "max", "iqr")),
    "throughput_img_s",
    "throughput_img_s_mean",
)


@dataclass
class CellResult:
    """One runtime at one batch size."""

    batch_size: int
    status: str = OK
    error: str | None = None
    first_call_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)
    device_peak_mem_mb: float | None = None

    def stats(self) -> dict[str, Any]:
        """Latency statistics in ms, throughput in images per second (None when not run)."""
        return latency_stats(self.samples_ms, batch_size=self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "status": self.status,
            "error": self.error,
            "first_call_ms": self.first_call_ms,
            **self.stats(),
            "device_peak_mem_mb": self.device_peak_mem_mb,
        }


@dataclass
class RuntimeResult:
    """One runtime on one artifact: cold start, memory and its cells."""

    runtime: str
    artifact: str
    status: str = OK
    error: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    first_inference_s: float | None = None
    compile_s: float | None = None
    host_rss_load_mb: float | None = None
    device_load_mem_mb: float | None = None
    cells: list[CellResult] = field(default_factory=list)

    @property
    def cold_start_s(self) -> float | None:
        if self.load_s is None or self.first_inference_s is None:
            return None
        return self.load_s + self.first_inference_s

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cells"}
        return {**d, "cold_start_s": self.cold_start_s, "cells": [c.to_dict() for c in self.cells]}


@dataclass
class BenchReport:
    """Everything ``tlx bench`` measured; :meth:`to_dict` is the ``bench.json`` content."""

    run_dir: Path
    config: BenchConfig
    environment: dict[str, Any]
    setup: dict[str, Any]
    results: list[RuntimeResult]
    skipped: list[dict[str, str]]
    host_peak_rss_mb: float | None
    created_at: str
    comparison: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    # "Deploy this" (exporter.bench.recommend), filled in when the reports are written.
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    recommendation_notes: list[str] = field(default_factory=list)
    # Instruction set, usable cores, memory limit (exporter.core.machine), read at bench time.
    machine: dict[str, Any] = field(default_factory=machine_facts)
    # --profile: per artifact × runtime, time per operator type and layer (bench/op_profile.py).
    profile: list[dict[str, Any]] | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per runtime × batch size (the CSV and Markdown tables)."""
        ref = self.config.reference_runtime
        ref_p50 = {
            c["batch_size"]: c["latency_ms_p50"]
            for r in self.results
            if r.runtime == ref
            for c in (cell.to_dict() for cell in r.cells)
            if c["latency_ms_p50"]
        }
        rows = []
        for r in self.results:
            cells = r.cells or [None]  # a runtime that failed to load still gets its row
            for cell in cells:
                row = {
                    "runtime": r.runtime,
                    "artifact": r.artifact,
                    # What the runtime says it ran (ORT runs the artifact's own precision).
                    "precision": r.describe.get("precision", self.config.precision),
                    "device": self.config.device,
                    **(
                        cell.to_dict()
                        if cell is not None
                        else {"batch_size": None, "status": r.status, "error": r.error}
                    ),
                    "load_s": r.load_s,
                    "cold_start_s": r.cold_start_s,
                    "compile_s": r.compile_s,
                    "host_rss_load_mb": r.host_rss_load_mb,
                }
                if r.error and not row.get("error"):
                    row["error"] = r.error
                p50, base = row.get("latency_ms_p50"), ref_p50.get(row["batch_size"])
                row[f"speedup_vs_{ref}"] = base / p50 if p50 and base else None
                rows.append(row)
        return rows

    def fastest(self) -> dict[int, dict[str, Any]]:
        """Per batch size, the row with the lowest p50 latency."""
        best: dict[int, dict[str, Any]] = {}
        for row in self.rows():
            p50 = row.get("latency_ms_p50")
            if row["status"] == OK and p50 is not None:
                b = row["batch_size"]
                if b not in best or p50 < best[b]["latency_ms_p50"]:
                    best[b] = row
        return dict(sorted(best.items()))

    def fastest_summary(self) -> dict[str, dict[str, Any]]:
        """bench.json's (and demo.json's) ``fastest``: runtime, artifact, p50 and throughput."""
        keys = ("runtime", "artifact", "latency_ms_p50", "throughput_img_s")
        return {str(b): {k: row[k] for k in keys} for b, row in self.fastest().items()}

    @property
    def gate_failures(self) -> list[str]:
        """The regressed cells of ``--compare`` (empty without a baseline or when none)."""
        comp = self.comparison
        if not comp or comp["passed"]:
            return []
        limit = f"limit {comp['max_regression_pct']:g}% beyond the noise band"
        return [
            f"regression against {comp.get('baseline')}: {c['runtime']} b{c['batch_size']} "
            f"p50 {c['latency_ms_p50']:.3f} ms vs {c['baseline_latency_ms_p50']:.3f} ms "
            f"({c['change_pct']:+.1f}%, {limit})"
            for c in comp["cells"]
            if c["regressed"]
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": BENCH_SCHEMA_VERSION,
            "command": "bench",
            "created_at": self.created_at,
            "run_dir": str(self.run_dir),
            "config": to_dict(self.config),
            "environment": self.environment,
            "machine": self.machine,
            "setup": self.setup,
            "results": [r.to_dict() for r in self.results],
            "rows": self.rows(),
            "skipped": self.skipped,
            "fastest": self.fastest_summary(),
            "recommendations": self.recommendations,
            "recommendation_notes": self.recommendation_notes,
            "host_peak_rss_mb": self.host_peak_rss_mb,
            "comparison": self.comparison,
            "profile": self.profile,
            "files": self.files,
        }


# --- statistics ---------------------------------------------------------------------------


def latency_stats(samples_ms: list[float], *, batch_size: int) -> dict[str, Any]:
    """Percentiles (numpy's linear interpolation), mean, std, min, max, IQR and throughput.

    Keys carry their unit. Every value is None when there are no samples.
    """
    if not samples_ms:
        return {"iters": 0, **dict.fromkeys(STAT_KEYS)}
    a = np.asarray(samples_ms, dtype=np.float64)
    pct = np.percentile(a, [*PERCENTILES, 25, 75])
    out: dict[str, Any] = {"iters": int(a.size)}
    out.update({f"latency_ms_p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=False)})
    mean = float(a.mean())
    out.update(
        latency_ms_mean=mean,
        latency_ms_std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        latency_ms_min=float(a.min()),
        latency_ms_max=float(a.max()),
        latency_ms_iqr=float(pct[-1] - pct[-2]),
        throughput_img_s=batch_size * 1000.0 / out["latency_ms_p50"],
        throughput_img_s_mean=batch_size * 1000.0 / mean,
    )
    return out

"""What a load test measured: levels, the report, and the server's queue/compute split.

Shared by :mod:`exporter.bench.loadtest` (which measures) and
:mod:`exporter.bench.loadtest_report` (which writes), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.config import LoadtestConfig, to_dict

LOADTEST_SCHEMA_VERSION = 1
THROUGHPUT_BASIS = "images answered without error in the counted windows / their duration"
STABILITY_RULE = (
    "a level counts when its last {k} windows agree within {pct:g}%: max/min of their "
    "throughput and of their mean latency both <= 1 + {pct:g}/100 (perf_analyzer's rule)"
)
OK, UNSTABLE, FAILED = "ok", "unstable", "errors"


@dataclass
class LevelResult:
    """One concurrency level: its counted windows, client figures and the server's split."""

    concurrency: int
    status: str = OK
    stable: bool = False
    windows: list[dict[str, Any]] = field(default_factory=list)
    counted_windows: int = 0
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)

    def row(self, *, artifact: str, request_batch: int) -> dict[str, Any]:
        return {
            "runtime": "triton-http",
            "artifact": artifact,
            "concurrency": self.concurrency,
            "batch_size": request_batch,
            "status": self.status,
            "stable": self.stable,
            "windows": len(self.windows),
            "requests": self.requests,
            "errors": self.errors,
            **self.stats,
            **{f"server_{k}": v for k, v in self.server.items() if k != "batch_histogram"},
        }


@dataclass
class LoadtestReport:
    """Everything the sweep measured; :meth:`to_dict` is ``loadtest.json``."""

    run_dir: Path
    config: LoadtestConfig
    environment: dict[str, Any]
    setup: dict[str, Any]
    levels: list[LevelResult]
    created_at: str
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def artifact(self) -> str:
        return str(self.setup["served"].get("artifact") or self.setup["served"]["name"])

    def rows(self) -> list[dict[str, Any]]:
        return [
            lv.row(artifact=self.artifact, request_batch=self.config.request_batch)
            for lv in self.levels
        ]

    def best(self) -> dict[str, Any] | None:
        """The level with the highest throughput among those that counted without errors."""
        rows = [r for r in self.rows() if r["throughput_img_s"] is not None]
        clean = [r for r in rows if r["stable"] and not r["errors"]] or rows
        return max(clean, key=lambda r: r["throughput_img_s"], default=None)

    @property
    def errors_total(self) -> int:
        return sum(lv.errors for lv in self.levels)

    @property
    def gate_failures(self) -> list[str]:
        """Every level with failed requests (a served model must answer all of them)."""
        return [
            f"concurrency {lv.concurrency}: {lv.errors} of {lv.requests + lv.errors} requests "
            f"failed ({lv.error_samples[0] if lv.error_samples else 'no message'})"
            for lv in self.levels
            if lv.errors
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": LOADTEST_SCHEMA_VERSION,
            "command": "loadtest",
            "created_at": self.created_at,
            "run_dir": str(self.run_dir),
            "config": to_dict(self.config),
            "environment": self.environment,
            "setup": self.setup,
            "rows": self.rows(),
            "levels": [
                {
                    "concurrency": lv.concurrency,
                    "status": lv.status,
                    "windows": lv.windows,
                    "counted_windows": lv.counted_windows,
                    "error_samples": lv.error_samples,
                    "batch_histogram": lv.server.get("batch_histogram", {}),
                }
                for lv in self.levels
            ],
            "best": self.best(),
            "errors_total": self.errors_total,
            "notes": self.notes,
            "files": self.files,
        }


def server_split(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Queue / compute time per request and the average batch, from two stats snapshots.

    Triton's ``inference_stats`` count requests and sum their nanoseconds;
    ``inference_count`` counts images and ``execution_count`` model executions, so their
    ratio is the average batch the dynamic batcher formed.
    """
    if not before or not after:
        return {"available": False}

    def delta(section: str) -> tuple[int, ...]:
        a = after.get("inference_stats", {}).get(section, {})
        b = before.get("inference_stats", {}).get(section, {})
        return tuple(int(a.get(k, 0)) - int(b.get(k, 0)) for k in ("count", "ns"))

    def per_request_ms(section: str) -> float | None:
        n, ns = delta(section)
        return ns / n / 1e6 if n > 0 else None

    images = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    parts = [per_request_ms(s) for s in ("compute_input", "compute_infer", "compute_output")]
    histogram = {}
    old = {b["batch_size"]: b for b in before.get("batch_stats", [])}
    for b in after.get("batch_stats", []):
        n = int(b["compute_infer"]["count"])
        n -= int(old.get(b["batch_size"], {}).get("compute_infer", {}).get("count", 0))
        if n:
            histogram[str(b["batch_size"])] = n
    return {
        "available": True,
        "requests": delta("success")[0],
        "failed": delta("fail")[0],
        "images": images,
        "executions": executions,
        "batch_avg": images / executions if executions else None,
        "request_ms": per_request_ms("success"),
        "queue_ms": per_request_ms("queue"),
        "compute_ms": None if any(p is None for p in parts) else sum(parts),
        "compute_infer_ms": parts[1],
        "batch_histogram": histogram,
    }

"""What a load test measured (levels, the server's queue/compute split) and its reports.

loadtest.json, .md, .csv and .png; nothing here reads a clock (measuring is
:mod:`exporter.bench.loadtest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.config import LoadtestConfig, to_dict
from exporter.core.runfolder import LOADTEST_CSV, LOADTEST_JSON, LOADTEST_MD, LOADTEST_PNG

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


# The console table: what fits an 80-column log.
SHORT_COLUMNS = (
    ("concurrency", "conc"),
    ("status", "status"),
    ("errors", "err"),
    ("throughput_img_s", "img/s"),
    ("latency_ms_p50", "p50 ms"),
    ("latency_ms_p99", "p99 ms"),
    ("server_queue_ms", "queue ms"),
    ("server_compute_ms", "compute ms"),
    ("server_batch_avg", "batch"),
)
TABLE_COLUMNS = (
    ("concurrency", "concurrency"),
    ("status", "status"),
    ("requests", "requests"),
    ("errors", "errors"),
    ("throughput_img_s", "img/s"),
    ("latency_ms_p50", "p50 ms"),
    ("latency_ms_p90", "p90 ms"),
    ("latency_ms_p95", "p95 ms"),
    ("latency_ms_p99", "p99 ms"),
    ("server_queue_ms", "server queue ms"),
    ("server_compute_ms", "server compute ms"),
    ("server_batch_avg", "avg batch"),
    ("server_client_overhead_ms", "client+protocol ms"),
)


def markdown_summary(report: LoadtestReport) -> str:
    """``loadtest.md``: setup, one row per concurrency level, the best level and notes."""
    from exporter.core.report import markdown_table

    d = report.to_dict()
    setup, env, served = d["setup"], d["environment"], d["setup"]["served"]
    lines = [
        f"# tlx loadtest: {report.run_dir}",
        "",
        f"- created: {report.created_at}",
        f"- server: {setup['server']}, model {served['name']!r} = "
        f"{served.get('parameters', {}).get('tlx_artifact') or 'unnamed artifact'} "
        f"({served.get('parameters', {}).get('tlx_runtime') or 'runtime not given'}), "
        f"{served['instances']} instance(s), max batch {served['max_batch_size']}, "
        f"dynamic batching: {_batching(served['dynamic_batching'])}",
        f"- client: {setup['client']}; {setup['request_batch']} image(s) per request, "
        f"{setup['image_size']} px, seed {setup['input_seed']}",
        f"- machine: {env.get('cpu_model')} ({env.get('cpu_count')} CPUs); "
        f"tlx {env.get('tlx')} ({env.get('tlx_git_commit') or 'no git'})",
        f"- rule: {setup['stability_rule']}; throughput = {setup['throughput_basis']}; "
        "latency percentiles over the counted windows' requests",
        "",
        markdown_table(d["rows"], TABLE_COLUMNS),
    ]
    best = report.best()
    if best:
        lines.append(
            f"Best: concurrency {best['concurrency']}, {best['throughput_img_s']:.1f} img/s, "
            f"p99 {best['latency_ms_p99']:.2f} ms, average batch "
            f"{_num(best.get('server_batch_avg'))}.\n"
        )
    lines.append(f"Errors over the sweep: {report.errors_total}.\n")
    for lv in report.levels:
        for sample in lv.error_samples:
            lines.append(f"- concurrency {lv.concurrency} error: {sample}")
    lines += [f"- note: {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _batching(cfg: dict[str, Any]) -> str:
    if not cfg:
        return "off"
    return f"queue delay {cfg.get('max_queue_delay_microseconds', 0)} us"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot_loadtest(report: LoadtestReport, dest: Path) -> None:
    """``loadtest.png``: p50 latency (bar p90-p99) and throughput vs concurrency."""
    from exporter.bench.report import plot_latency
    from exporter.core.report import new_figure, save_png

    fig, axes = new_figure(ncols=2, size=(5.5, 4.0))
    ax_lat, ax_thr = axes[0]
    rows = [r for r in report.rows() if r.get("latency_ms_p50") is not None]
    xs = [r["concurrency"] for r in rows]
    title = f"{report.artifact} via {report.config.server}"
    if rows:
        plot_latency(ax_lat, xs, rows, label="p50", bar_label="p90-p99")
        ax_thr.plot(xs, [r["throughput_img_s"] for r in rows], marker="o")
        for r in rows:
            if r.get("server_batch_avg"):
                ax_thr.annotate(
                    f"b{r['server_batch_avg']:.1f}",
                    (r["concurrency"], r["throughput_img_s"]),
                    textcoords="offset points",
                    xytext=(0, 6),
                    fontsize="small",
                )
        for ax in (ax_lat, ax_thr):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
        ax_lat.legend(fontsize="small")
    else:
        for ax in (ax_lat, ax_thr):
            ax.text(0.5, 0.5, "no successful requests", ha="center", transform=ax.transAxes)
    ax_lat.set(xlabel="concurrency", ylabel="latency ms (p50; bar p90-p99)", title=title)
    ax_thr.set(xlabel="concurrency", ylabel="throughput img/s (label: avg batch)", title=title)
    for ax in (ax_lat, ax_thr):
        ax.grid(True, which="both", alpha=0.3)
    save_png(dest, fig)


def write_loadtest_reports(report: LoadtestReport, out_dir: Path) -> dict[str, str]:
    """Write loadtest.csv, .md, .png and (last, listing them) loadtest.json."""
    from exporter.core.report import write_csv, write_markdown, write_report_json
    from exporter.core.runlock import run_lock

    out_dir.mkdir(parents=True, exist_ok=True)
    names = (LOADTEST_CSV, LOADTEST_MD, LOADTEST_PNG, LOADTEST_JSON)
    paths = {name: out_dir / name for name in names}
    report.files = {name: str(p) for name, p in paths.items()}
    # The set under the run's lock: a concurrent loadtest's files never interleave with ours.
    with run_lock(out_dir, "loadtest"):
        write_csv(paths[LOADTEST_CSV], report.rows())
        write_markdown(paths[LOADTEST_MD], markdown_summary(report))
        plot_loadtest(report, paths[LOADTEST_PNG])
        write_report_json(paths[LOADTEST_JSON], report.to_dict())
    return report.files

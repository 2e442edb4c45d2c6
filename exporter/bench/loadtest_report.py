"""loadtest.json → loadtest.md, loadtest.csv, loadtest.png (bench's shapes and writers).

Split from :mod:`exporter.bench.loadtest` (which measures) so that module stays about
measuring; nothing here reads a clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.runfolder import LOADTEST_CSV, LOADTEST_JSON, LOADTEST_MD, LOADTEST_PNG

if TYPE_CHECKING:
    from exporter.bench.loadtest_result import LoadtestReport


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
    from exporter.core.report import new_figure, save_png

    fig, axes = new_figure(ncols=2, size=(5.5, 4.0))
    ax_lat, ax_thr = axes[0]
    rows = [r for r in report.rows() if r.get("latency_ms_p50") is not None]
    xs = [r["concurrency"] for r in rows]
    title = f"{report.artifact} via {report.config.server}"
    if rows:
        (line,) = ax_lat.plot(xs, [r["latency_ms_p50"] for r in rows], marker="o", label="p50")
        ax_lat.vlines(
            xs,
            [r["latency_ms_p90"] for r in rows],
            [r["latency_ms_p99"] for r in rows],
            colors=line.get_color(),
            linewidth=3,
            alpha=0.5,
            label="p90-p99",
        )
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

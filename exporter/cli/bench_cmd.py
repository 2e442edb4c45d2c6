"""``tlx bench``: latency and throughput of every runtime of a run, and the regression gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import Quiet, command, deprecated, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import BenchConfig

if TYPE_CHECKING:
    from exporter.bench.result import BenchReport


# The terminal's part of bench.md's table: what fits a log line, the status and error as one.
TERMINAL_KEYS = ("runtime", "artifact", "batch_size", "latency_ms_p50", "latency_ms_p90")
TERMINAL_KEYS += ("latency_ms_p99", "throughput_img_s", "cold_start_s")


def bench_table(report: BenchReport) -> Table:
    """The rich table printed after a bench: one row per runtime × batch size."""
    from exporter.bench.report import formatters, table_columns

    ref = report.config.reference_runtime
    cols = [c for c in table_columns(ref) if c[0] in (*TERMINAL_KEYS, f"speedup_vs_{ref}")]
    rows = (
        {**row, "note": row.get("error") or ("" if row["status"] == "ok" else row["status"])}
        for row in report.rows()
    )
    title = f"tlx bench ({report.config.device}, {report.config.precision})"
    formats = formatters(ref) | {"throughput_img_s": lambda v: "" if v is None else f"{v:.1f}"}
    return report_table(
        title,
        rows,
        [*cols, ("note", "note")],
        formatters=formats,
        left=("runtime", "artifact", "note"),
    )


@command("bench", BenchConfig, lock=True)
def bench_command(
    run: Annotated[Path, typer.Argument(help="The run folder (made by `tlx train`).")],
    quiet: Quiet = False,
    server: Annotated[
        str | None, typer.Option(hidden=True, help="Deprecated: `tlx loadtest RUN --server URL`.")
    ] = None,
    **options: Any,
) -> Any:
    """Measure latency percentiles, throughput and cold start of every runtime, interleaved."""
    if server is not None:
        from exporter.cli.loadtest_cmd import run_and_print
        from exporter.core.config import LoadtestConfig

        deprecated("tlx bench --server", "tlx loadtest RUN --server URL")
        out = options["out_dir"]
        return run_and_print(
            run, LoadtestConfig(server=server, out_dir=out and str(out)), quiet=quiet
        )
    from exporter.bench.bench import bench_run
    from exporter.bench.op_profile import profile_summary
    from exporter.bench.recommend import deploy_lines
    from exporter.core.runfolder import BENCH_JSON

    cfg = build(BenchConfig, options)
    report = staged(bench_run, run, cfg, quiet=quiet, table=bench_table)
    if not quiet:
        say(*(f"skipped {s['runtime']}: {s['reason']}" for s in report.skipped))
        say(*profile_summary(report.profile or []))
        if report.comparison:
            verdict = "passed" if report.comparison["passed"] else "FAILED"
            say(f"regression gate {verdict} against {cfg.compare}")
    say(*deploy_lines(report), f"wrote {report.files.get(BENCH_JSON)}")
    return report

"""``tlx loadtest``: a load test of a server (also the deprecated ``tlx bench --server``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import Quiet, command, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import LoadtestConfig

if TYPE_CHECKING:
    from exporter.bench.loadtest import LoadtestReport


def loadtest_table(report: LoadtestReport) -> Table:
    """One row per concurrency level."""
    from exporter.bench.loadtest_report import SHORT_COLUMNS

    title = f"tlx loadtest: {report.artifact} via {report.config.server}"
    return report_table(title, report.rows(), SHORT_COLUMNS, left=("status",))


def run_and_print(run: Path, cfg: LoadtestConfig, *, quiet: bool) -> LoadtestReport:
    """The one library call, the table and the gate (shared with ``tlx bench --server``)."""
    from exporter.bench.loadtest import run_loadtest

    report = staged(run_loadtest, run, cfg, quiet=quiet, table=loadtest_table)
    if not quiet:
        if best := report.best():
            say(
                f"best: concurrency {best['concurrency']}, {best['throughput_img_s']:.1f} img/s, "
                f"p99 {best['latency_ms_p99']:.2f} ms"
            )
        say(*(f"note: {note}" for note in report.notes))
    from exporter.core.runfolder import LOADTEST_JSON

    say(f"wrote {report.files.get(LOADTEST_JSON)}")
    return report  # its gate_failures exit 1


@command("loadtest", LoadtestConfig)
def loadtest_command(
    run: Annotated[Path, typer.Argument(help="The run folder the server serves.")],
    quiet: Quiet = False,
    **options: Any,
) -> Any:
    """Closed-loop concurrency sweep: throughput, latency percentiles, errors, server batching.

    Exit codes: 0 no request failed, 1 some failed (reports are written first), 2 bad
    option or a server of another run, 3 nothing answers at the URL.
    """
    return run_and_print(run, build(LoadtestConfig, options), quiet=quiet)

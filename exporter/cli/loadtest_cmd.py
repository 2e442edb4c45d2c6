"""``tlx loadtest`` (also ``tlx bench RUN --server URL``): a load test of a running server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exporter.cli.app import app, cli_errors, console, exit_if_failed, progress_bar
from exporter.core.config import LoadtestConfig

if TYPE_CHECKING:
    from exporter.bench.loadtest import LoadtestReport

_DEFAULTS = LoadtestConfig()


def loadtest_table(report: LoadtestReport) -> Table:
    """One row per concurrency level."""
    from exporter.bench.loadtest_report import SHORT_COLUMNS
    from exporter.core.report import format_cell

    table = Table(title=f"tlx loadtest: {report.artifact} via {report.config.server}")
    for key, header in SHORT_COLUMNS:
        table.add_column(header, justify="left" if key == "status" else "right")
    for row in report.rows():
        table.add_row(*(format_cell(row.get(key), digits=2) for key, _ in SHORT_COLUMNS))
    return table


def parse_levels(text: str) -> tuple[int, ...]:
    from exporter.core.errors import UsageError

    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels:
        raise UsageError(f"--concurrency {text!r}: give integers separated by commas, e.g. 1,2,4")
    return levels


def run_and_print(run: Path, cfg: LoadtestConfig, *, quiet: bool) -> None:
    """The one library call, the table and the gate (shared with ``tlx bench --server``)."""
    from exporter.bench.loadtest import run_loadtest

    with progress_bar(quiet=quiet) as progress:
        report = run_loadtest(run, cfg, progress=progress)
    if not quiet:
        console.print(loadtest_table(report))
        best = report.best()
        if best:
            console.print(
                f"best: concurrency {best['concurrency']}, "
                f"{best['throughput_img_s']:.1f} img/s, p99 {best['latency_ms_p99']:.2f} ms",
                markup=False,
            )
        for note in report.notes:
            console.print(f"note: {note}", markup=False)
    from exporter.core.runfolder import LOADTEST_JSON

    console.print(f"wrote {report.files.get(LOADTEST_JSON)}", markup=False)
    exit_if_failed("loadtest", report.gate_failures)


@app.command("loadtest")
def loadtest_command(
    run: Annotated[Path, typer.Argument(help="The run folder the server serves.")],
    server: Annotated[
        str, typer.Option(help="The server's HTTP URL (KServe v2), e.g. http://127.0.0.1:8000.")
    ] = _DEFAULTS.server,
    model_name: Annotated[
        str, typer.Option(help="The served model's name.")
    ] = _DEFAULTS.model_name,
    concurrency: Annotated[
        str, typer.Option(help="Closed-loop levels: requests in flight, e.g. 1,2,4,8,16.")
    ] = ",".join(str(c) for c in _DEFAULTS.concurrency),
    request_batch: Annotated[
        int, typer.Option(help="Images per request.")
    ] = _DEFAULTS.request_batch,
    window: Annotated[
        float, typer.Option(help="Seconds per measurement window.")
    ] = _DEFAULTS.window_s,
    stability: Annotated[
        float, typer.Option(help="How far (%) the last 3 windows may differ for a level to count.")
    ] = _DEFAULTS.stability_pct,
    max_windows: Annotated[
        int, typer.Option(help="Windows per level before it is reported as unstable.")
    ] = _DEFAULTS.max_windows,
    warmup: Annotated[
        float, typer.Option(help="Untimed seconds at the start of every level.")
    ] = _DEFAULTS.warmup_s,
    max_requests: Annotated[
        int, typer.Option(help="Requests per level, at most.")
    ] = _DEFAULTS.max_requests,
    max_time: Annotated[
        float, typer.Option(help="Seconds for the whole sweep, at most.")
    ] = _DEFAULTS.max_time_s,
    allow_remote: Annotated[
        bool, typer.Option(help="Permit a server that is not on this machine's loopback.")
    ] = _DEFAULTS.allow_remote,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for loadtest.json/.md/.csv/.png (default: the run folder)."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")
    ] = False,
) -> None:
    """Closed-loop concurrency sweep: throughput, latency percentiles, errors, server batching.

    Exit codes: 0 no request failed, 1 some failed (reports are written first), 2 bad
    option or a server of another run, 3 nothing answers at the URL.
    """
    with cli_errors():
        cfg = LoadtestConfig(
            server=server,
            model_name=model_name,
            concurrency=parse_levels(concurrency),
            request_batch=request_batch,
            window_s=window,
            stability_pct=stability,
            max_windows=max_windows,
            warmup_s=warmup,
            max_requests=max_requests,
            max_time_s=max_time,
            allow_remote=allow_remote,
            out_dir=str(out) if out else None,
        )
        run_and_print(run, cfg, quiet=quiet)

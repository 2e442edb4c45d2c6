"""``tlx tune``: search the serving settings of the run's artifact within its CPUs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import Quiet, command, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import TuneConfig

if TYPE_CHECKING:
    from exporter.bench.tune import TuneResult

TRIAL_COLUMNS = (  # narrow enough for an 80-column terminal; errors follow the table
    ("stage", "stage"),
    ("instances", "inst"),
    ("threads_per_instance", "thr"),
    ("max_batch", "batch"),
    ("queue_delay_us", "delay us"),
    ("throughput_img_s", "img/s"),
    ("latency_ms_p99", "p99 ms"),
    ("avg_batch", "avg b"),
)


def trials_table(result: TuneResult) -> Table:
    """Every trial tried, in order; the winner's rows marked."""
    plan = result.search.plan.to_dict()
    title = f"tlx tune: {result.artifact} on {result.runtime}, {result.cpus} CPUs, "
    title += f"concurrency {result.config.concurrency}"
    rows = (
        {**row, "plan": "<-" if all(row[k] == v for k, v in plan.items()) else ""}
        for row in (t.to_dict() for t in result.search.trials)
    )
    cols = [*TRIAL_COLUMNS, ("plan", "plan")]
    return report_table(title, rows, cols, left=("stage", "plan"), no_wrap=True)


@command("tune", TuneConfig, lock=True)
def tune_command(
    run: Annotated[Path, typer.Argument(help="The run folder (exported; benched for its pick).")],
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Search instances x threads x max batch x queue delay for `tlx serve`; write RUN/tune.json.

    The plan becomes the default of `tlx serve RUN` and `tlx export RUN --format triton`
    (an option given on their command line still wins).
    """
    from exporter.bench.tune import tune_run

    result = staged(tune_run, run, build(TuneConfig, options), quiet=quiet, table=trials_table)
    if not quiet:
        trials = result.search.trials
        say(*(f"trial {t.trial}: {t.measurement.error}" for t in trials if t.measurement.error))
    say(*result.summary())

"""``tlx tune``: search the serving settings of the run's artifact within its CPUs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exporter.cli.app import NO_WAIT_HELP, app, cli_errors, console, progress_bar, run_lock_policy
from exporter.core.config import TuneConfig

if TYPE_CHECKING:
    from exporter.bench.tune import TuneResult

_DEFAULTS = TuneConfig()
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
    from exporter.core.report import format_cell

    plan = result.search.plan.to_dict()
    table = Table(
        title=f"tlx tune: {result.artifact} on {result.runtime}, {result.cpus} CPUs, "
        f"concurrency {result.config.concurrency}"
    )
    for key, header in TRIAL_COLUMNS:
        table.add_column(header, justify="left" if key == "stage" else "right", no_wrap=True)
    table.add_column("plan", no_wrap=True)
    for row in (t.to_dict() for t in result.search.trials):
        chosen = all(row[k] == v for k, v in plan.items())
        cells = [format_cell(row.get(key), digits=2) for key, _ in TRIAL_COLUMNS]
        table.add_row(*cells, "<-" if chosen else "")
    return table


@app.command("tune")
def tune_command(
    run: Annotated[Path, typer.Argument(help="The run folder (exported; benched for its pick).")],
    cpus: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Cores the server may use in total, e.g. the target pod's CPU limit "
            "(default: the cores this process may use: affinity and cgroup quota).",
        ),
    ] = _DEFAULTS.cpus,
    budget: Annotated[
        float, typer.Option(help="Seconds the search may take, loading included.")
    ] = _DEFAULTS.budget_s,
    concurrency: Annotated[
        int, typer.Option(help="Single-image requests in flight during each trial.")
    ] = _DEFAULTS.concurrency,
    variant: Annotated[
        str | None, typer.Option(help="Tune this artifact (default: the recommended one).")
    ] = _DEFAULTS.variant,
    runtime: Annotated[
        str | None, typer.Option(help="Runtime that runs it (default: chosen with it).")
    ] = _DEFAULTS.runtime,
    no_wait: Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no table.")] = False,
) -> None:
    """Search instances x threads x max batch x queue delay for `tlx serve`; write RUN/tune.json.

    The plan becomes the default of `tlx serve RUN` and `tlx export RUN --format triton`
    (an option given on their command line still wins).
    """
    with cli_errors(), run_lock_policy(no_wait):
        from exporter.bench.tune import tune_run

        cfg = TuneConfig(
            cpus=cpus, budget_s=budget, concurrency=concurrency, variant=variant, runtime=runtime
        )
        with progress_bar(quiet=quiet) as progress:
            result = tune_run(run, cfg, progress=progress)
        if not quiet:
            console.print(trials_table(result))
            for t in result.search.trials:
                if t.measurement.error:
                    console.print(f"trial {t.trial}: {t.measurement.error}", markup=False)
        plan = result.search.plan
        console.print(
            f"plan: {plan.instances} instance(s) x {plan.threads_per_instance} thread(s), "
            f"max batch {plan.max_batch}, queue delay {plan.queue_delay_us} us "
            f"({plan.cores} of {result.cpus} CPUs); written to {result.path}",
            markup=False,
            soft_wrap=True,
        )
        for note in result.search.notes:
            console.print(f"note: {note}", markup=False)

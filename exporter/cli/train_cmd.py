"""``tlx train``: parse options → TrainConfig → :func:`exporter.train.fit` → table and report.

With ``--nproc``/``--nnodes`` this process launches the same command on every worker through
torchrun instead (``exporter/train/launch.py``); ``torchrun ... -m exporter train ...``
reaches the plain path directly, once per worker.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import command, console, debug_enabled, deprecated, say, staged, table
from exporter.cli.options import build, command_line, declared, given
from exporter.core.config import LaunchSpec, TrainConfig

if TYPE_CHECKING:
    from exporter.train.common import TrainEvent

LAUNCHER_PARAMS = tuple(f.name for f, _, _ in declared(LaunchSpec))


@command("train", TrainConfig, LaunchSpec, lock=True)
def train_command(
    ctx: typer.Context,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue RUN from its checkpoint/ (other options are ignored except "
            "--epochs, --device, --quiet)."
        ),
    ] = None,
    no_augment: Annotated[
        bool, typer.Option("--no-augment", hidden=True, help="Deprecated: --augment off.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    **options: Any,
) -> None:
    """Train VGG16's head (and optionally the top of the trunk) and write a run folder."""
    with _worker_errors():
        if no_augment and _rank()[1] == 0:  # every worker gets the same command line
            deprecated("--no-augment", "--augment off")
        if any(given(ctx, name) for name in LAUNCHER_PARAMS):
            _launch(ctx)
            return
        cfg, resuming = _config(ctx)
        _train_and_report(cfg, resume=resuming, quiet=quiet)


def _config(ctx: typer.Context) -> tuple[TrainConfig, bool]:
    """(config, resume?): a new run, ``--resume RUN``, or a torchrun restart of a run."""
    from exporter.train import resume_config
    from exporter.train.train import run_to_continue

    p = {**ctx.params, **({"augment": "off"} if ctx.params["no_augment"] else {})}
    run = run_to_continue(p["resume"], p["out"])
    if run is None:
        cfg = build(TrainConfig, p)
        return replace(cfg, data=replace(cfg.data, seed=cfg.seed)), False
    # e.g. more epochs, or a CPU run continued on a GPU (or the reverse)
    kept = {k: getattr(p[k], "value", p[k]) for k in ("epochs", "device") if given(ctx, k)}
    return replace(resume_config(run), **kept), True


def _rank() -> tuple[int, int]:
    """(global rank, local rank) under torchrun; (0, 0) otherwise."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("LOCAL_RANK", "0") or 0)


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """Under torchrun every rank hits the same bad option or signal: only each node's first
    rank says so (its exit status is the same everywhere)."""
    from exporter.core.errors import GateFailed, Interrupted, UsageError

    try:
        yield
    except (UsageError, GateFailed, Interrupted) as exc:
        if _rank()[1] != 0 and not debug_enabled():
            raise typer.Exit(exc.exit_code) from None
        raise


def _train_and_report(cfg: TrainConfig, *, resume: bool, quiet: bool) -> None:
    from exporter.train import fit
    from exporter.train.common import fmt_metric

    def train(progress: Any) -> Any:
        def shown(event: TrainEvent) -> None:
            if line := event.log_line():  # logged even when quiet or off a terminal
                say(line, err=True)
            if progress is not None and (args := event.stage_progress()) is not None:
                progress(*args)

        if progress is not None:
            progress("loading data and model", 0, 1)  # decoding a big image folder takes minutes
        return fit(cfg, progress=shown, resume=resume)

    main = _rank()[0] == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = staged(train, quiet=quiet or not main)
        finally:  # skipped images: one line each, on stderr
            say(*(f"warning: {w.message}" for w in (caught if main else ())), err=True)
    if not main:
        return
    console.print(summary_table(result.record))
    finder = result.record.get("lr_finder")
    if finder and finder.get("stopped") != "skipped":  # skipped: the warning says why
        say(
            f"--lr auto: the range test chose {finder['chosen_lr']:.2e} "
            f"({finder['seconds']:.1f} s; curve in lr_find.png)"
        )
        if finder.get("warning"):
            say(f"warning: --lr auto: {finder['warning']}", err=True)
    best = result.record["best"]
    say(
        f"best epoch {best['epoch']}: val accuracy {fmt_metric(best['val_accuracy'])}; "
        f"run folder {result.run_dir}"
    )


def summary_table(record: dict[str, Any]) -> Table:
    """One row per epoch of train.json's record; the best epoch marked."""
    from exporter.train.common import fmt_metric as fmt

    cols = ("epoch", "phase", "lr", "train loss", "train acc", "val loss", "val acc", "img/s", "s")
    best = record["best"]["epoch"]
    rows = (
        (
            f"{e['epoch']}{' *' if e['epoch'] == best else ''}",
            str(e["phase"]),
            f"{e['lr']:.2e}",
            fmt(e["train_loss"]),
            f"{e['train_accuracy']:.3f}",
            fmt(e["val_loss"]),
            f"{e['val_accuracy']:.3f}",
            f"{e['images_per_s']:.1f}",
            f"{e['seconds']:.1f}",
        )
        for e in record["epochs"]
    )
    title = f"tlx train: {record['dataset']['name']} ({record['status']})"
    out = table(title, cols, rows, left=0)
    # In 80 columns rich squeezed "1.00e-03" into "1.00e-0" over "3"; the headers wrap instead.
    out.columns[2].no_wrap = True
    return out


def _launch(ctx: typer.Context) -> None:
    """``--nproc``/``--nnodes``: the same command on every worker, through torchrun."""
    from exporter.train.launch import WorkerFailed
    from exporter.train.train import launch_training

    spec = build(LaunchSpec, ctx.params)
    args = command_line(ctx, skip=LAUNCHER_PARAMS)
    try:
        launch_training(_config(ctx)[0], spec, args, resume=ctx.params["resume"] is not None)
    except WorkerFailed as exc:  # the worker printed its reason; keep its exit status
        raise typer.Exit(exc.exit_code) from None

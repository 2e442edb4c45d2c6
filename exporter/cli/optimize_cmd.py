"""``tlx optimize RUN``: fold, int8 and fp16 ONNX variants, each gated before it ships."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exporter.cli.app import (
    NO_WAIT_HELP,
    app,
    cli_errors,
    console,
    err_console,
    exit_if_failed,
    progress_bar,
    run_lock_policy,
)
from exporter.core.config import DEFAULT_OPTIMIZE_VARIANTS, OPTIMIZE_VARIANTS, OptimizeConfig

if TYPE_CHECKING:
    from exporter.optimize.optimize import OptimizeResult

_DEFAULTS = OptimizeConfig()


@app.command("optimize")
def optimize_command(
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help=f"Comma-separated, from: {', '.join(OPTIMIZE_VARIANTS)}. fold: pool→fc1 folded "
            "(fixed H×W); int8: static QDQ; int8-dynamic: weights-only (slower at large "
            "batches); fold-int8: both; fp16: `tlx export --precision fp16`.",
        ),
    ] = ",".join(DEFAULT_OPTIMIZE_VARIANTS),
    calib_samples: Annotated[
        int,
        typer.Option("--calib-samples", help="Training images that calibrate int8 activations."),
    ] = _DEFAULTS.calib_samples,
    eval_samples: Annotated[
        int,
        typer.Option(
            "--eval-samples", help="Held-out validation images every variant is gated on."
        ),
    ] = _DEFAULTS.eval_samples,
    min_top1: Annotated[
        float,
        typer.Option(
            "--min-top1", help="int8/fp16 gate: minimum top-1 agreement with eager (0-1)."
        ),
    ] = _DEFAULTS.min_top1_agreement,
    max_accuracy_drop: Annotated[
        float,
        typer.Option(
            "--max-accuracy-drop", help="Gate: largest held-out accuracy drop, in points."
        ),
    ] = _DEFAULTS.max_accuracy_drop_points,
    seed: Annotated[
        int, typer.Option("--seed", help="Chooses the calibration and evaluation images.")
    ] = _DEFAULTS.seed,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild variants that already exist.")
    ] = _DEFAULTS.force,
    no_wait: Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table.")] = False,
) -> None:
    """Build faster ONNX variants of a run, gate each on held-out images against eager, and list
    the ones that pass in RUN/manifest.json (failures go to RUN/rejected/; exit code 1)."""
    with cli_errors(), run_lock_policy(no_wait):
        from exporter.optimize.optimize import optimize_run

        cfg = OptimizeConfig(
            variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
            calib_samples=calib_samples,
            eval_samples=eval_samples,
            min_top1_agreement=min_top1,
            max_accuracy_drop_points=max_accuracy_drop,
            force=force,
            seed=seed,
        )
        with progress_bar(quiet=quiet) as progress:
            result = optimize_run(run, cfg, progress=progress)
        if not quiet:
            console.print(_table(result))
            console.print(f"manifest: {result.manifest_path}  report: {result.report_path}")
        for v in result.variants:
            if v.status == "skipped":
                err_console.print(f"note: {v.variant} skipped: {v.reason}", markup=False)
        exit_if_failed("optimize", result.gate_failures)


def _table(result: OptimizeResult) -> Table:
    table = Table(title=f"tlx optimize {result.run_dir}")
    cols = ("variant", "file", "status", "MB", "top-1 agree", "acc", "Δacc pts", "max |Δ|")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:3] else "right")
    for v in result.variants:
        g = v.gate
        table.add_row(
            v.variant,
            v.path or v.artifact,
            v.status,
            f"{v.file_bytes / 1e6:.1f}" if v.file_bytes else "-",
            f"{g.top1_agreement:.2%}" if g else "-",
            f"{g.accuracy_candidate:.2%}" if g else "-",
            f"{g.accuracy_delta_points:+.2f}" if g else "-",
            f"{g.max_abs_logit_diff:.2e}" if g else "-",
        )
    return table

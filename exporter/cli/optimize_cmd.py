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
from exporter.core.config import (
    AUTO_PRUNE_RATIOS,
    DEFAULT_OPTIMIZE_VARIANTS,
    OPTIMIZE_VARIANTS,
    PRUNED_VARIANTS,
    OptimizeConfig,
)

if TYPE_CHECKING:
    from exporter.optimize.optimize import OptimizeResult

_DEFAULTS = OptimizeConfig()


@app.command("optimize")
def optimize_command(
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    variants: Annotated[
        str | None,
        typer.Option(
            "--variants",
            help=f"Comma-separated, from: {', '.join(OPTIMIZE_VARIANTS)}. fold: pool→fc1 folded "
            "(fixed H×W); int8: static QDQ; int8-dynamic: weights-only (slower at large "
            "batches); fold-int8: both; fp16: fp16 weights and compute. Default: "
            f"{','.join(DEFAULT_OPTIMIZE_VARIANTS)}, or none of them with --prune.",
            show_default=False,
        ),
    ] = None,
    prune: Annotated[
        str | None,
        typer.Option(
            "--prune",
            help="Also build a smaller model: remove this fraction of every convolution's "
            "channels (0-1, e.g. 0.5; fc layers keep (1-ratio)² of their neurons), distill "
            "it from the trained model, export it as `pruned` (fp32) and `pruned-int8`, and "
            f"gate both by --max-drop. 'auto': try {', '.join(map(str, AUTO_PRUNE_RATIOS))} "
            "and ship the most pruned that passes.",
        ),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop",
            help="Pruned variants: the accuracy budget, in points below the trained model "
            "on the held-out images.",
        ),
    ] = _DEFAULTS.max_drop_points,
    min_agreement: Annotated[
        float,
        typer.Option(
            "--min-agreement",
            help="Pruned variants: minimum top-1 agreement with the trained model (0-1).",
        ),
    ] = _DEFAULTS.min_agreement,
    distill_epochs: Annotated[
        int, typer.Option("--distill-epochs", help="Epochs of distillation per pruned model.")
    ] = _DEFAULTS.distill_epochs,
    distill_lr: Annotated[
        float, typer.Option("--distill-lr", help="AdamW learning rate of the distillation.")
    ] = _DEFAULTS.distill_lr,
    distill_batch: Annotated[
        int, typer.Option("--distill-batch", help="Images per distillation step.")
    ] = _DEFAULTS.distill_batch,
    distill_samples: Annotated[
        int | None,
        typer.Option(
            "--distill-samples",
            help="Training images to distill on (default: the whole training split).",
            show_default=False,
        ),
    ] = _DEFAULTS.distill_samples,
    distill_device: Annotated[
        str,
        typer.Option("--distill-device", help="cpu, cuda or auto (CUDA when present)."),
    ] = _DEFAULTS.distill_device,
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir",
            help="Where the run's training images are now, if they moved since `tlx train`.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue a distillation that a signal stopped (with --prune)."
        ),
    ] = False,
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
            variants=None
            if variants is None
            else tuple(v.strip() for v in variants.split(",") if v.strip()),
            prune=prune,
            max_drop_points=max_drop,
            min_agreement=min_agreement,
            distill_epochs=distill_epochs,
            distill_lr=distill_lr,
            distill_batch=distill_batch,
            distill_samples=distill_samples,
            distill_device=distill_device,
            data_dir=data_dir,
            resume=resume,
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
    cols = ("variant", "file", "status", "MB", "agree", "acc", "Δacc pts", "max |Δ|", "ms b1")
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
            f"{g.max_abs_logit_diff:.2e}" if g and v.variant not in PRUNED_VARIANTS else "-",
            _latency(result, v.path),
        )
    return table


def _latency(result: OptimizeResult, path: str | None) -> str:
    """ORT CPU batch-1 p50 of a built file, as timed at the end of the command."""
    ms = result.timing.get("p50_ms", {}).get(path or "", {}).get("ort-cpu")
    return "-" if ms is None else f"{ms:.2f}"

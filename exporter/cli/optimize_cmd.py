"""``tlx optimize RUN``: fold, int8 and fp16 ONNX variants, each gated before it ships."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import NoWait, Quiet, command, say, staged, table
from exporter.cli.options import build
from exporter.core.config import PRUNED_VARIANTS, OptimizeConfig

if TYPE_CHECKING:
    from exporter.optimize.optimize import OptimizeResult


@command("optimize", OptimizeConfig)
def optimize_command(
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    no_wait: NoWait = False,
    quiet: Quiet = False,
    **options: Any,
) -> Any:
    """Build faster ONNX variants of a run, gate each on held-out images against eager, and list
    the ones that pass in RUN/manifest.json (failures go to RUN/rejected/; exit code 1)."""
    from exporter.optimize.optimize import optimize_run

    result = staged(optimize_run, run, build(OptimizeConfig, options), quiet=quiet, table=_table)
    if not quiet:
        say(f"manifest: {result.manifest_path}  report: {result.report_path}")
    skipped = (v for v in result.variants if v.status == "skipped")
    say(*(f"note: {v.variant} skipped: {v.reason}" for v in skipped), err=True)
    return result


def _table(result: OptimizeResult) -> Table:
    cols = ("variant", "file", "status", "MB", "agree", "acc", "Δacc pts", "max |Δ|", "ms b1")
    rows = (
        (
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
        for v in result.variants
        for g in [v.gate]
    )
    return table(f"tlx optimize {result.run_dir}", cols, rows, left=3)


def _latency(result: OptimizeResult, path: str | None) -> str:
    """ORT CPU batch-1 p50 of a built file, as timed at the end of the command."""
    ms = result.timing.get("p50_ms", {}).get(path or "", {}).get("ort-cpu")
    return "-" if ms is None else f"{ms:.2f}"

"""``tlx optimize RUN``: fold, int8 and fp16 ONNX variants, each gated before it ships."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import Quiet, command, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import OptimizeConfig

if TYPE_CHECKING:
    from exporter.optimize.optimize import OptimizeResult


@command("optimize", OptimizeConfig, lock=True)
def optimize_command(
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
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


# The terminal's part of optimize.md's table: what fits a log line.
TERMINAL_KEYS = ("variant", "file", "status", "mb", "accuracy_candidate", "top1_agreement")
TERMINAL_KEYS += ("accuracy_delta_points", "max_abs_logit_diff", "ort-cpu")


def _table(result: OptimizeResult) -> Table:
    """optimize.md's rows and formats, the columns of TERMINAL_KEYS."""
    from exporter.optimize.report import COLUMNS, FORMATTERS, variant_rows

    rows = variant_rows([v.to_dict() for v in result.variants], result.timing)
    cols = [c[:2] for c in COLUMNS if c[0] in TERMINAL_KEYS]
    title = f"tlx optimize {result.run_dir}"
    return report_table(title, rows, cols, formatters=FORMATTERS, left=3)

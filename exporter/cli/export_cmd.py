"""``tlx export RUN``: TorchScript, ONNX and .pt2 artifacts with metadata and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from exporter.cli.app import Quiet, command, console, report_table, say, staged
from exporter.cli.options import build
from exporter.core.config import KSERVE, TRITON, ExportConfig, KServeConfig, TritonConfig

if TYPE_CHECKING:
    from exporter.export.export import ExportResult


@command("export", ExportConfig, lock=True)
def export_command(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Export a trained run to TorchScript, ONNX and .pt2; each file is checked against eager
    before it is written, and listed with its sha256 in RUN/manifest.json."""
    from exporter.cli.serve_cmd import planned
    from exporter.deploy.package import export_and_package

    chosen = {f.value for f in options["formats"]}
    # The triton options apply to --format triton/kserve alone; other formats ignore them.
    triton, kserve = TritonConfig(), KServeConfig()
    if KSERVE in chosen:
        kserve = build(KServeConfig, options)
    if TRITON in chosen or KSERVE in chosen:
        params, _ = planned(ctx, run, options)
        # export has no --threads: a repository's are the tuned plan's, else the backend's.
        triton = build(TritonConfig, params, threads=params.get("threads"))
    cfg = build(ExportConfig, options, triton=triton, kserve=kserve)
    result, packaged = staged(export_and_package, run, cfg, quiet=quiet)
    if result is not None:
        _print_result(result, quiet=quiet)
    if packaged is not None and not quiet:
        say(*packaged.lines())


def _print_result(result: ExportResult, *, quiet: bool) -> None:
    if result.dropped:
        dropped = ", ".join(result.dropped)
        say(f"note: dropped manifest entries exported from older weights: {dropped}", err=True)
    if quiet:
        return
    cols = ["file", "format", "precision", ("bytes", "MB"), ("export_time_s", "export s")]
    cols += [("check", "max |Δ| vs eager"), "sha256"]
    rows = (
        {**r.to_dict(), "check": f"{r.max_abs_diff:.2e} (atol {r.atol:g})"}
        for r in result.formats.values()
    )
    formats = {"bytes": lambda b: f"{b / 1e6:.1f}", "export_time_s": lambda s: f"{s:.1f}"}
    formats["sha256"] = lambda sha: sha[:12]
    left = ("file", "format", "sha256")
    console.print(
        report_table(f"tlx export {result.run_dir}", rows, cols, formatters=formats, left=left)
    )
    say(f"manifest: {result.manifest_path}  report: {result.report_path}")

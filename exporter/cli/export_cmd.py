"""``tlx export RUN``: TorchScript, ONNX and .pt2 artifacts with metadata and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from exporter.cli.app import (
    NoWait,
    app,
    cli_errors,
    console,
    progress_bar,
    run_lock_policy,
    say,
    table,
)
from exporter.cli.options import build, config_options, given
from exporter.core.config import KSERVE, TRITON, ExportConfig, KServeConfig, TritonConfig

if TYPE_CHECKING:
    from exporter.export.export import ExportResult

TUNED = ("max_batch_size", "max_queue_delay_us", "instances")  # RUN/tune.json's, unless given


@app.command("export")
@config_options(ExportConfig)
def export_command(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    no_wait: NoWait = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    **options: Any,
) -> None:
    """Export a trained run to TorchScript, ONNX and .pt2; each file is checked against eager
    before it is written, and listed with its sha256 in RUN/manifest.json."""
    with cli_errors(), run_lock_policy(no_wait):
        from exporter.export.export import export_run

        p = options
        chosen = tuple(f.value for f in p["formats"])
        # The triton options apply to --format triton/kserve alone; other formats ignore them.
        triton, kserve = TritonConfig(), KServeConfig()
        if KSERVE in chosen:
            kserve = build(KServeConfig, p)
        if TRITON in chosen or KSERVE in chosen:
            from exporter.core.tuneplan import triton_settings

            mine = {k: p[k] if given(ctx, k) else None for k in TUNED}
            tuned, _ = triton_settings(run, mine, device=p["device"], variant=p["variant"])
            triton = build(TritonConfig, {**p, **{k: v for k, v in tuned.items() if v is not None}})
        cfg = build(ExportConfig, p, triton=triton, kserve=kserve)
        with progress_bar(quiet=quiet) as progress:
            result = export_run(run, cfg, progress=progress)
        _print_result(result, quiet=quiet)


def _print_result(result: ExportResult, *, quiet: bool) -> None:
    if result.dropped:
        dropped = ", ".join(result.dropped)
        say(f"note: dropped manifest entries exported from older weights: {dropped}", err=True)
    if quiet:
        return
    cols = ("file", "format", "precision", "MB", "export s", "max |Δ| vs eager", "sha256")
    rows = (
        (
            r.name,
            r.format,
            r.precision,
            f"{r.bytes / 1e6:.1f}",
            f"{r.export_time_s:.1f}",
            f"{r.max_abs_diff:.2e} (atol {r.atol:g})",
            r.sha256[:12],
        )
        for r in result.formats.values()
    )
    if result.formats:
        title = f"tlx export {result.run_dir}"
        console.print(table(title, cols, rows, left=("file", "format", "sha256")))
    if (t := result.triton) is not None:
        say(f"triton: {t.model_dir} from {t.source} ({t.reason})", f"serve it: {t.command}")
    if (k := result.kserve) is not None:
        say(
            f"kserve: {', '.join(str(f) for f in k.files)}",
            f"plan: {k.plan.instances} instance(s) x {k.plan.threads} thread(s), {k.plan.cores} "
            f"CPU, target concurrency {k.plan.target_concurrency} ({k.plan.source})",
            f"apply it: kubectl apply -f {k.files[0]}",
        )
    say(f"manifest: {result.manifest_path}  report: {result.report_path}")

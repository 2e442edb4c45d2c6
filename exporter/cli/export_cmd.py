"""``tlx export RUN``: TorchScript, ONNX and .pt2 artifacts with metadata and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exporter.cli.app import (
    NO_WAIT_HELP,
    app,
    choice_enum,
    cli_errors,
    console,
    err_console,
    progress_bar,
    run_lock_policy,
)
from exporter.core.choices import ALL, EXPORT_PRECISIONS
from exporter.core.config import (
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    EXPORTER_CHOICES,
    KSERVE,
    MAX_LEGACY_OPSET,
    TRITON,
    ExportConfig,
    KServeConfig,
    TritonConfig,
)

if TYPE_CHECKING:
    from exporter.deploy.package import PackageResult
    from exporter.export.export import ExportResult

_DEFAULTS = ExportConfig()
_TRITON = TritonConfig()
_KSERVE = KServeConfig()


FormatChoice = choice_enum("FormatChoice", (*EXPORT_FORMATS, TRITON, KSERVE, ALL))
PrecisionChoice = choice_enum("PrecisionChoice", EXPORT_PRECISIONS)
ExporterChoice = choice_enum("ExporterChoice", EXPORTER_CHOICES)


@app.command("export")
def export_command(
    run: Annotated[Path, typer.Argument(help="The run folder made by `tlx train`.")],
    formats: Annotated[
        list[FormatChoice] | None,
        typer.Option(
            "--format",
            "-f",
            help="Artifact format; repeat for several. Default: all "
            f"({', '.join(EXPORT_FORMATS)}). triton: a Triton model repository in RUN/triton "
            "from the best verified ONNX artifact (not part of all). kserve: Kubernetes "
            "manifests in RUN/kserve serving that repository (written first if missing).",
            case_sensitive=False,
        ),
    ] = None,
    opset: Annotated[
        int | None,
        typer.Option(
            "--opset",
            help=f"ONNX opset (default: {DEFAULT_OPSET} for dynamo, {MAX_LEGACY_OPSET} for the "
            "legacy exporter).",
        ),
    ] = _DEFAULTS.opset,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help="Largest batch every artifact is checked at; the fixed batch with --static-batch.",
        ),
    ] = _DEFAULTS.batch_size,
    static_batch: Annotated[
        bool,
        typer.Option("--static-batch", help="Export ONNX/.pt2 with a fixed batch of --batch-size."),
    ] = _DEFAULTS.static_batch,
    precision: Annotated[
        PrecisionChoice,
        typer.Option(
            "--precision",
            help="fp16 writes model.fp16.onnx (fp16 compute, fp32 inputs/outputs) instead of "
            "model.onnx; TorchScript and .pt2 stay fp32.",
            case_sensitive=False,
        ),
    ] = PrecisionChoice(_DEFAULTS.precision),
    exporter: Annotated[
        ExporterChoice,
        typer.Option(
            "--exporter",
            help="ONNX exporter: dynamo (torch.export based, default) or legacy (TorchScript "
            "based; fails on VGG16 at 32 px).",
            case_sensitive=False,
        ),
    ] = ExporterChoice(_DEFAULTS.exporter),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite artifacts that already exist.")
    ] = _DEFAULTS.force,
    no_wait: Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)] = False,
    variant: Annotated[
        str | None,
        typer.Option(help="triton: ship this variant or artifact (fold-int8, model.onnx)."),
    ] = _TRITON.variant,
    device: Annotated[
        str, typer.Option(help="triton: target device, cpu or cuda (default config.pbtxt).")
    ] = _TRITON.device,
    model_name: Annotated[
        str, typer.Option("--model-name", help="triton: the model's name on the server.")
    ] = _TRITON.model_name,
    max_batch: Annotated[
        int | None,
        typer.Option(
            "--max-batch",
            help="triton: max_batch_size (dynamic batching; default: RUN/tune.json's plan, "
            f"else {_TRITON.max_batch}).",
        ),
    ] = None,
    max_queue_delay_us: Annotated[
        int | None,
        typer.Option(
            "--max-queue-delay-us",
            help="triton: dynamic batching queue delay (default: RUN/tune.json's plan, "
            f"else {_TRITON.max_queue_delay_us}).",
        ),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            "--instances",
            help="triton: model instances (instance_group count; default: RUN/tune.json's "
            "plan, else 1).",
        ),
    ] = None,
    storage_uri: Annotated[
        str | None,
        typer.Option(
            "--storage-uri",
            help="kserve (required): where the cluster reads the copy of RUN/triton "
            "(s3://bucket/path, gs://bucket/path or pvc://claim/path).",
        ),
    ] = _KSERVE.storage_uri,
    k8s_name: Annotated[
        str | None,
        typer.Option("--k8s-name", help="kserve: the object name (default: --model-name)."),
    ] = _KSERVE.name,
    min_replicas: Annotated[
        int, typer.Option("--min-replicas", help="kserve: the autoscaler's lower bound.")
    ] = _KSERVE.min_replicas,
    max_replicas: Annotated[
        int, typer.Option("--max-replicas", help="kserve: the autoscaler's upper bound.")
    ] = _KSERVE.max_replicas,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Export a trained run to TorchScript, ONNX and .pt2; each file is checked against eager
    before it is written, and listed with its sha256 in RUN/manifest.json."""
    with cli_errors(), run_lock_policy(no_wait):
        from exporter.core.runlock import run_lock
        from exporter.deploy.package import package_run
        from exporter.export.export import export_run

        chosen = tuple(f.value for f in (formats or [FormatChoice(ALL)]))
        # The triton options apply to --format triton/kserve alone; other formats ignore them.
        triton, kserve = TritonConfig(), KServeConfig()
        if KSERVE in chosen:
            kserve = KServeConfig(
                storage_uri=storage_uri,
                name=k8s_name,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
            )
        if TRITON in chosen or KSERVE in chosen:
            from exporter.core.tuneplan import serve_settings

            given = {"max_batch": max_batch, "max_queue_delay_us": max_queue_delay_us}
            given |= {"instances": instances, "threads": None}
            settings, _ = serve_settings(run, given, device=device, variant=variant)
            tuned = {k: v for k, v in settings.items() if v is not None}
            triton = TritonConfig(model_name=model_name, device=device, variant=variant, **tuned)
        cfg = ExportConfig(
            formats=chosen,
            opset=opset,
            batch_size=batch_size,
            static_batch=static_batch,
            precision=precision.value,
            exporter=exporter.value,
            force=force,
            triton=triton,
            kserve=kserve,
        )
        result = packaged = None
        # triton/kserve are the deployment step after the export (one lock for both).
        with progress_bar(quiet=quiet) as progress, run_lock(run, "export"):
            if cfg.model_formats:
                result = export_run(run, cfg, progress=progress)
            if len(cfg.model_formats) < len(cfg.formats):
                packaged = package_run(run, cfg, progress=progress)
        if result is not None:
            _print_result(result, quiet=quiet)
        if packaged is not None and not quiet:
            _print_packaged(packaged)


def _print_result(result: ExportResult, *, quiet: bool) -> None:
    if result.dropped:
        err_console.print(
            "note: dropped manifest entries exported from older weights: "
            + ", ".join(result.dropped),
            markup=False,
        )
    table = Table(title=f"tlx export {result.run_dir}")
    for col in ("file", "format", "precision", "MB", "export s", "max |Δ| vs eager", "sha256"):
        table.add_column(col, justify="left" if col in ("file", "format", "sha256") else "right")
    for r in result.formats.values():
        table.add_row(
            r.name,
            r.format,
            r.precision,
            f"{r.bytes / 1e6:.1f}",
            f"{r.export_time_s:.1f}",
            f"{r.max_abs_diff:.2e} (atol {r.atol:g})",
            r.sha256[:12],
        )
    if not quiet:
        console.print(table)
        console.print(f"manifest: {result.manifest_path}  report: {result.report_path}")


def _print_packaged(result: PackageResult) -> None:
    if result.triton is not None:
        t = result.triton
        console.print(
            f"triton: {t.model_dir} from {t.source} ({t.reason})\nserve it: {t.command}",
            markup=False,
            soft_wrap=True,
        )
    if result.kserve is not None:
        k = result.kserve
        console.print(
            f"kserve: {', '.join(str(f) for f in k.files)}\n"
            f"plan: {k.plan.instances} instance(s) x {k.plan.threads} thread(s), "
            f"{k.plan.cores} CPU, target concurrency {k.plan.target_concurrency} "
            f"({k.plan.source})\napply it: kubectl apply -f {k.files[0]}",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"manifest: {result.manifest_path}  report: {result.report_path}")

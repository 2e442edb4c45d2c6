"""``tlx export``: the exporter registry and the orchestration around it.

``export_run`` takes settings that checked themselves (``ExportConfig``), checks what they
need here (the opset torch can emit), refuses to overwrite without ``force``,
rebuilds the eager reference from ``model.safetensors``, runs each exporter (each writes its
file only after its own check passed), merges the results into ``manifest.json`` and writes
``export.json``. Manifest entries exported from different weights are dropped
(:meth:`~exporter.core.runfolder.Run.manifest_to_extend`, the rule optimize applies too). The
``triton`` and ``kserve`` formats are a later, deployment step (``exporter.deploy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.config import (
    DEFAULT_OPSET,
    MAX_LEGACY_OPSET,
    MIN_DYNAMO_OPSET,
    ExportConfig,
    to_dict,
)
from exporter.core.errors import InputFileError, UsageError
from exporter.core.fsio import clean_stale_temps, write_json
from exporter.core.manifest import MANIFEST_NAME, FileRecord, manifest_path
from exporter.core.report import Progress
from exporter.core.resources import require
from exporter.core.runfolder import EXPORT_JSON as EXPORT_REPORT
from exporter.core.runlock import locks_run
from exporter.core.safepath import guard
from exporter.export.common import ExportContext, FormatResult, StepFn
from exporter.export.onnx_export import export_onnx, onnx_name
from exporter.export.torch_export import PT2_NAME, TORCHSCRIPT_NAME, export_pt2, export_torchscript
from exporter.model.footprint import export_need

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

REPORT_SCHEMA_VERSION = 1
# The registry: one function per name in EXPORT_FORMATS (core/config), in that order, each
# ``(ctx, progress) -> FormatResult``.
EXPORTERS: dict[str, Callable[[ExportContext, StepFn | None], FormatResult]] = {
    "onnx": export_onnx,
    "torchscript": export_torchscript,
    "pt2": export_pt2,
}


@dataclass(frozen=True)
class ExportResult:
    """What ``export_run`` wrote: per format, the written artifact."""

    run_dir: Path
    formats: dict[str, FormatResult]
    manifest_path: Path
    report_path: Path  # RUN/export.json
    dropped: list[str] = field(default_factory=list)  # entries of older model.safetensors
    opset: int = DEFAULT_OPSET  # in effect, also when ONNX was not requested


def resolve_opset(cfg: ExportConfig) -> int:
    """The opset in effect; out-of-range values are a usage error naming the valid range."""
    import torch.onnx._constants as onnx_constants  # private, but the only source of truth

    max_opset = int(getattr(onnx_constants, "ONNX_MAX_OPSET", DEFAULT_OPSET))
    if cfg.exporter == "legacy":
        lo, hi = 9, min(MAX_LEGACY_OPSET, max_opset)
        opset = cfg.opset if cfg.opset is not None else hi
    else:
        lo, hi = MIN_DYNAMO_OPSET, max_opset
        opset = cfg.opset if cfg.opset is not None else min(DEFAULT_OPSET, hi)
    if not lo <= opset <= hi:
        raise UsageError(f"--opset {opset}: the {cfg.exporter} exporter supports opsets {lo}..{hi}")
    return opset


def artifact_names(cfg: ExportConfig) -> dict[str, str]:
    """Format → the file it writes in the run folder."""
    names = {"onnx": onnx_name(cfg.precision), "torchscript": TORCHSCRIPT_NAME, "pt2": PT2_NAME}
    return {f: names[f] for f in cfg.formats if f in names}


@locks_run("export")
def export_run(
    run_dir: Run | str | Path, cfg: ExportConfig | None = None, *, progress: Progress | None = None
) -> ExportResult:
    """Export a trained run to every requested model format (``cfg.model_formats``; the
    ``triton``/``kserve`` formats are :func:`exporter.deploy.package.package_run`'s), check
    each, update the manifest.

    ``run_dir`` may be the opened run (whose manifest is then kept up to date with what this
    export writes); ``cfg`` defaults to all three formats, fp32, dynamic batch.

    Raises:
        InputFileError: the run folder or its weights are missing or not VGG16, or an
            artifact exists and ``force`` is not set.
        UsageError: bad settings, no model format; the legacy exporter cannot export this
            model.
        GateFailed: an artifact fails its check (it is then not written; earlier formats
            of the same call stay written and listed).
    """
    from exporter.core.runfolder import open_run
    from exporter.export.metadata import shared_metadata
    from exporter.model.vgg import load_reference_model

    cfg = cfg or ExportConfig()  # its values were checked when it was built
    if not cfg.model_formats:
        raise UsageError(
            "--format triton/kserve package a run for a server: call "
            "exporter.deploy.package.package_run (tlx export dispatches them there)"
        )
    opset = resolve_opset(cfg)
    info = open_run(run_dir)
    run = info.run_dir
    steps = 2 + len(cfg.model_formats)
    done = [0]

    def say(description: str) -> None:
        if progress:
            progress(description, done[0], steps)

    _refuse_existing(run, cfg)
    _require_resources(info, cfg)
    clean_stale_temps(run)  # leftovers of a killed earlier export

    say("hashing model.safetensors")
    manifest, dropped = info.manifest_to_extend(force=cfg.force)  # the stale-weights rule
    source = manifest.source
    done[0] += 1
    say("loading the trained model")
    model = load_reference_model(info)
    manifest.metadata = shared_metadata(info, source_sha256=source.sha256)
    ctx = ExportContext(run, info, model, cfg, shared=manifest.metadata, opset=opset)
    done[0] += 1
    results: dict[str, FormatResult] = {}
    for fmt in cfg.model_formats:
        results[fmt] = result = EXPORTERS[fmt](ctx, say)
        manifest.artifacts[result.name] = result.entry
        # Save after each format: a later failure must not unlist a file already written.
        info.save_manifest(manifest)
        done[0] += 1
    # The weights must not have changed while we exported from them (a file rewritten or
    # replaced since it was hashed is hashed again).
    if info.sha256(info.weights_path.name) != source.sha256:
        raise InputFileError(
            f"{info.weights_path} changed during the export; run `tlx export {run} --force` again"
        )
    report_path = _write_report(run, cfg, opset, source, dropped, results)
    return ExportResult(run, results, manifest_path(run), report_path, dropped, opset)


def _refuse_existing(run: Path, cfg: ExportConfig) -> None:
    """Without ``force``, an artifact that already exists is an error (before any work).

    With or without it, no file the export writes may be reached through a link (checked
    here, before any work, so a refused export writes nothing).
    """
    names = [*artifact_names(cfg).values(), MANIFEST_NAME, EXPORT_REPORT]
    for name in names:
        guard(run / name, root=run)
    if cfg.force:
        return
    for name in artifact_names(cfg).values():
        if (run / name).exists() or (run / name).is_symlink():
            raise InputFileError(f"{run / name} already exists; pass --force to overwrite it")


def _write_report(
    run: Path,
    cfg: ExportConfig,
    opset: int,
    source: FileRecord,
    dropped: list[str],
    results: dict[str, FormatResult],
) -> Path:
    from exporter.core.envinfo import environment
    from exporter.export.metadata import utc_now

    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "command": "export",
        "created_at": utc_now(),
        "run_dir": str(run),
        "config": {**to_dict(cfg), "formats": list(cfg.model_formats), "opset": opset},
        "environment": environment("cpu"),
        "source": source.to_dict(),
        "dropped_stale_artifacts": dropped,
        "results": {fmt: r.to_dict() for fmt, r in results.items()},
    }
    report_path = run / EXPORT_REPORT
    write_json(report_path, report)
    return report_path


def _require_resources(info: Run, cfg: ExportConfig) -> None:
    """Exit 3 before loading anything when memory or disk cannot hold the export."""
    fp16 = onnx_name("fp16")
    need = export_need(
        size=info.preprocessing.image_size,
        batch=cfg.batch_size,
        num_classes=info.num_classes,
        files={n: 2 if n == fp16 else 4 for n in artifact_names(cfg).values()},  # bytes/param
        folder=info.run_dir,
    )
    require(need)

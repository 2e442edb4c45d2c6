"""Where a variant goes: its metadata, its manifest entry, shipped or kept in ``rejected/``.

Shared by every variant of :func:`exporter.optimize.optimize.optimize_run`; what a variant is
(file name, precision) is declared here once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.config import OptimizeConfig
from exporter.core.errors import UsageError
from exporter.core.fsio import atomic_path
from exporter.core.manifest import (
    ArtifactEntry,
    FileRecord,
    Manifest,
)
from exporter.core.safepath import guard
from exporter.verify.verdict import Judgement

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

REJECTED_DIR = "rejected"
OPSET = 18  # the dynamo exporter's own opset: no version conversion, quantizer-friendly
VARIANT_FILES = {
    "fold": "model.fold.onnx",
    "int8": "model.int8.onnx",
    "int8-dynamic": "model.int8-dynamic.onnx",
    "fold-int8": "model.fold.int8.onnx",
    "fp16": "model.fp16.onnx",
    "pruned": "model.pruned.onnx",
    "pruned-int8": "model.pruned.int8.onnx",
}
VARIANT_PRECISION = {
    "fold": "fp32",
    "int8": "int8",
    "int8-dynamic": "int8",
    "fold-int8": "int8",
    "fp16": "fp16",
    "pruned": "fp32",
    "pruned-int8": "int8",
}
FOLDED = ("fold", "fold-int8")


def is_fixed_hw(variant: str, details: dict[str, Any]) -> bool:
    """Whether the file only takes the run's size: the fold variants, and a pruned model
    that was folded (``details["prune"]["folded"]``)."""
    return variant in FOLDED or bool(details.get("prune", {}).get("folded"))


@dataclass
class VariantResult:
    """What happened to one requested variant."""

    variant: str
    artifact: str
    status: str  # "shipped", "rejected" or "skipped"
    precision: str
    reason: str | None = None
    path: str | None = None  # relative to the run folder
    file_bytes: int | None = None
    build_s: float | None = None
    gate: Judgement | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "artifact": self.artifact,
            "status": self.status,
            "precision": self.precision,
            "reason": self.reason,
            "path": self.path,
            "file_bytes": self.file_bytes,
            "build_s": self.build_s,
            "gate": self.gate.to_dict() if self.gate else None,
            **self.details,
        }

    @classmethod
    def judged(
        cls, variant: str, artifact: str, gate: Judgement, seconds: float, details: dict[str, Any]
    ) -> VariantResult:
        """A built variant, shipped or rejected by its gate."""
        return cls(
            variant=variant,
            artifact=artifact,
            status="shipped" if gate.passed else "rejected",
            precision=VARIANT_PRECISION[variant],
            reason="; ".join(gate.failures) or None,
            build_s=round(seconds, 3),
            gate=gate,
            details=details,
        )


def _stamp_metadata(
    path: Path, info: Run, result: VariantResult, source_sha256: str
) -> dict[str, Any]:
    """Embed the shared artifact metadata (classes, preprocessing, versions) in the file.

    Same record and encoding as ``tlx export`` (:mod:`exporter.export.metadata`); ORT's quantizers
    do not carry metadata over, so it is written after the build.
    """
    import onnx

    from exporter.export.metadata import artifact_metadata, embed_in_onnx, shared_metadata

    variant, details = result.variant, result.details
    meta = artifact_metadata(
        shared_metadata(info, source_sha256=source_sha256),
        info,
        fmt="onnx",
        precision=VARIANT_PRECISION[variant],
        batch=None,
        exporter=f"tlx optimize --variants {variant} (torch.onnx.export(dynamo=True))",
        opset=OPSET,
    )
    meta.update(variant=variant)
    if is_fixed_hw(variant, details):
        meta["input_constraints"] = {"fixed_hw": meta["inputs"][0]["shape"][2:]}
    if "prune" in details:  # a different, smaller model: say what it is, inside the file
        meta["model_shape"] = details["prune"]["shape"]
        meta["judged_by"] = "task-level profile (accuracy drop and agreement vs model.safetensors)"
    model = onnx.load(str(path))
    embed_in_onnx(model, meta)
    onnx.save(model, str(path))
    return meta


def load_or_create_manifest(info: Run, *, force: bool = False) -> tuple[Manifest, list[str]]:
    """The manifest to add variants to, and the entries dropped as stale.

    The rule ``tlx export`` applies (:meth:`~exporter.core.runfolder.Run.manifest_to_extend`):
    entries made from other weights than ``model.safetensors`` now are dropped. Nothing
    exported yet gets the source record and metadata ``tlx export`` would write.
    """
    from exporter.export.metadata import shared_metadata

    manifest, dropped = info.manifest_to_extend(force=force)
    if not manifest.metadata:
        manifest.metadata = shared_metadata(info, source_sha256=manifest.source.sha256)
    return manifest, dropped


def require_resources(info: Run, cfg: OptimizeConfig, *, eval_batch: int) -> None:
    """Exit 3 up front when memory or disk cannot hold the requested variants."""
    from exporter.core.resources import require
    from exporter.model.footprint import optimize_need

    # Bytes per parameter of each file: an upper bound (a folded file is smaller still).
    per_param = {"int8": 1, "fp16": 2}
    need = optimize_need(
        size=info.preprocessing.image_size,
        images=cfg.eval_samples + cfg.calib_samples,
        eval_batch=eval_batch,
        num_classes=info.num_classes,
        files={v: per_param.get(VARIANT_PRECISION[v], 4) for v in cfg.variants},
        folder=info.run_dir,
    )
    require(need)


def refuse_existing(run: Path, manifest: Manifest, cfg: OptimizeConfig) -> None:
    if cfg.force:
        return
    names = [VARIANT_FILES[v] for v in cfg.variants]
    if cfg.prune is not None and not cfg.resume:
        names += [VARIANT_FILES[v] for v in ("pruned", "pruned-int8")]
    existing = [n for n in names if n in manifest.artifacts or (run / n).exists()]
    if existing:
        raise UsageError(
            f"{', '.join(existing)} already exist in {run}: pass --force to rebuild them"
        )


def place(manifest: Manifest, built: Path, result: VariantResult, *, info: Run) -> None:
    """Stamp a built file's metadata, move it into the run (shipped) or ``rejected/`` and
    update the manifest."""
    from exporter.core.envinfo import onnxruntime_version
    from exporter.export.metadata import utc_now

    run, name = info.run_dir, result.artifact
    meta = _stamp_metadata(built, info, result, manifest.source.sha256)
    shipped = result.status == "shipped"
    result.path = name if shipped else f"{REJECTED_DIR}/{name}"
    with atomic_path(run / result.path) as tmp:
        os.replace(built, tmp)
    result.file_bytes = (run / result.path).stat().st_size
    if shipped:
        manifest.artifacts[name] = ArtifactEntry(
            name=name,
            format="onnx",
            files=[FileRecord.of(run, name)],
            precision=result.precision,
            variant=result.variant,
            inputs=meta["inputs"],
            outputs=meta["outputs"],
            input_constraints=meta.get("input_constraints", {}),
            extra={
                "opset": OPSET,
                "exporter": "tlx optimize",
                "derived_from": info.weights_path.name,
                "exported_at": utc_now(),
                "onnxruntime": onnxruntime_version(),
                "gate": result.gate.to_dict() if result.gate else None,
                **result.details,
            },
        )
    # A failed rebuild must not leave an older shipped file of the same name listed.
    elif manifest.artifacts.pop(name, None) is not None:
        with contextlib.suppress(FileNotFoundError):
            guard(run / name).unlink()
    info.save_manifest(manifest)  # after every variant: a crash later leaves it consistent

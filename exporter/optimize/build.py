"""Building one ``tlx optimize`` variant in a scratch folder, and its gate.

Every variant starts from an fp32 ONNX export of the eager model (folded or not), made once
per run; the gate runs the built file with ONNX Runtime on the CPU against the eager logits.
Where the file then goes (shipped or ``rejected/``) is :mod:`exporter.optimize.ship`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import OptimizeConfig
from exporter.optimize.quantize import quantize_dynamic_int8, quantize_static_int8
from exporter.optimize.ship import FOLDED, OPSET, VARIANT_FILES, VARIANT_PRECISION, VariantResult
from exporter.runtimes.ort_sessions import cpu_logits
from exporter.verify.tolerance import TASK, profile_for, profile_name
from exporter.verify.verdict import Heldout, Judgement, judge

if TYPE_CHECKING:
    from torch import nn

EVAL_BATCH = 32  # images per ONNX Runtime call in the gate (and per eager call)


def build_variant(
    variant: str,
    model: nn.Module,
    work: Path,
    *,
    plan: Any,
    calibration: np.ndarray | None,
    size: int,
) -> tuple[Path, dict[str, Any]]:
    """Build ``variant`` in ``work``; the fp32 ONNX it starts from is exported once per run
    (model.onnx itself may be another exporter's or opset's: the variants share one base)."""
    import onnx

    from exporter.export.onnx_export import convert_to_fp16
    from exporter.optimize.fold import fold_vgg16

    details: dict[str, Any] = {}
    if variant in FOLDED:
        src = work / "folded.onnx"
        if not src.exists():
            save_onnx(fold_vgg16(model, size), src, image_size=size)
        details["fold"] = plan.to_dict()
    else:
        src = work / "base.onnx"
        if not src.exists():
            save_onnx(model, src, image_size=size)
    built = work / VARIANT_FILES[variant]
    if variant == "fold":
        shutil.copyfile(src, built)  # folded.onnx stays the source of fold-int8
    elif variant == "fp16":  # `tlx export --precision fp16`'s conversion, of the fp32 base
        proto = convert_to_fp16(onnx.load(str(src)))
        onnx.save_model(proto, str(built), save_as_external_data=False)
    elif variant in ("int8", "fold-int8"):
        details["quantization"] = quantize_static_int8(src, built, calibration_images=calibration)
    else:  # int8-dynamic
        details["quantization"] = quantize_dynamic_int8(src, built)
    return built, details


def save_onnx(module: nn.Module, dest: Path, *, image_size: int) -> None:
    """Export ``module`` to a self-contained ONNX file with a dynamic batch and fixed H×W.

    The export stage's dynamo export (the legacy exporter fails on VGG16 at 32 px), with its
    example batch (a batch of 1 gets specialised, pytorch #157621).
    """
    import onnx
    import torch

    from exporter.export.common import EXAMPLE_BATCH
    from exporter.export.onnx_export import dynamo_export

    example = torch.zeros(EXAMPLE_BATCH, 3, image_size, image_size)
    with torch.no_grad():
        proto = dynamo_export(module.eval(), example, opset=OPSET)
    onnx.save_model(proto, str(dest), save_as_external_data=False)


def skipped_fold(variant: str, plan: dict[str, Any], image_size: int) -> VariantResult:
    why = (
        "the trunk already outputs 7×7, so pooling is the identity and the fold changes nothing"
        if plan["pooling_is_identity"]
        else f"the trunk outputs {plan['trunk_hw']}, so the folded fc1 would not be smaller"
    )
    hint = "use int8" if variant == "fold-int8" else "ship model.onnx as is"
    return VariantResult(
        variant=variant,
        artifact=VARIANT_FILES[variant],
        status="skipped",
        precision=VARIANT_PRECISION[variant],
        reason=f"pointless at {image_size} px: {why}; {hint}",
        details={"fold": plan},
    )


def evaluate_onnx(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    *,
    cfg: OptimizeConfig,
    variant: str,
) -> Judgement:
    """Run ``variant``'s gate on an ONNX file (the profile ``tlx verify`` judges it by)."""
    precision = VARIANT_PRECISION[variant]
    name = profile_name(precision, variant)
    candidate = cpu_logits(path, images, batch=EVAL_BATCH)
    if name == TASK:  # a pruned model: the user's accuracy budget and agreement floor
        profile = profile_for(
            TASK, min_top1=cfg.min_agreement, max_accuracy_drop_points=cfg.max_drop_points
        )
    else:
        profile = profile_for(
            precision,
            # The fp32 fold must agree exactly (ties aside): keep the fp32 profile's own 100%.
            min_top1=None if precision == "fp32" else cfg.min_top1_agreement,
            max_accuracy_drop_points=cfg.max_accuracy_drop_points,
        )
    return judge(reference, candidate, profile, heldout=Heldout(reference, candidate, labels))

"""``tlx optimize --prune``: pruned and distilled variants, judged at the task level.

For each ratio (one, or ``auto``'s list, most aggressive first): prune the trained model's
channels (:mod:`~exporter.optimize.prune`), distill it from the trained model on the run's
training images (:mod:`~exporter.optimize.distill`), then the exact path every variant takes:
export, the pooling fold where it saves parameters, static int8 with calibration. Each file
is gated by the ``task`` profile (held-out accuracy within ``--max-drop`` points of the
trained model, with the paired 95 % interval, and top-1 agreement ≥ ``--min-agreement``).
``auto`` stops at the first ratio with a passing variant: a smaller ratio keeps more channels,
so it is slower (timed, not assumed: optimize.json has every variant's latency).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import PRUNE_AUTO, OptimizeConfig
from exporter.core.errors import EnvironmentUnavailable, InputFileError
from exporter.model.shape import VGGShape
from exporter.optimize.build import evaluate_onnx, save_onnx
from exporter.optimize.ship import VARIANT_FILES, VariantResult, place

if TYPE_CHECKING:
    from torch import nn

    from exporter.core.runfolder import Run

ALL_TRAINING_IMAGES = 10**9  # load_eval_images takes the whole split when n exceeds it
TEACHER_BATCH = 64  # images per forward pass of the trained model over the training set


@dataclass
class TrainingSet:
    """The images the student learns from, with the teacher's answers on them."""

    images: np.ndarray
    labels: np.ndarray
    soft_targets: np.ndarray


def load_training_set(info: Run, teacher: nn.Module, cfg: OptimizeConfig) -> TrainingSet:
    """The run's training images (eval transform) and the trained model's logits on them.

    Raises:
        InputFileError: the training images are gone (exit 2, naming ``--data-dir``).
    """
    from exporter.data.datasets import load_eval_images
    from exporter.verify.judge import infer_reference

    n = cfg.distill_samples or ALL_TRAINING_IMAGES
    try:
        images, labels = load_eval_images(
            info, n, split="train", seed=cfg.seed, data_dir=cfg.data_dir
        )
    except (InputFileError, EnvironmentUnavailable) as exc:
        hint = "" if cfg.data_dir else " (pass --data-dir to say where they are now)"
        raise InputFileError(f"distillation needs the run's training images: {exc}{hint}") from exc
    return TrainingSet(images, labels, infer_reference(teacher, images, TEACHER_BATCH))


def file_name(variant: str, ratio: float, *, auto: bool) -> str:
    """``model.pruned.onnx``; under ``auto`` each tried ratio has its own name until shipped."""
    name = VARIANT_FILES[variant]
    return name.replace("model.pruned", f"model.pruned-r{ratio:.2f}") if auto else name


def build_ratio(
    info: Run,
    inputs: Any,
    data: TrainingSet,
    *,
    ratio: float,
    cfg: OptimizeConfig,
    work: Path,
    report: Any,
) -> list[tuple[VariantResult, Path]]:
    """Prune, distill, export and gate ``pruned`` and ``pruned-int8`` at one ratio.

    Returns:
        Each variant's result (status ``shipped`` or ``rejected`` by its gate) and its built
        file in ``work``; placing them is the caller's.
    """
    from exporter.optimize.distill import checkpoint_folder, distill
    from exporter.optimize.fold import fold_vgg16, plan_fold
    from exporter.optimize.prune import prune_vgg16
    from exporter.optimize.quantize import quantize_static_int8
    from exporter.train.common import resolve_device

    size = info.preprocessing.image_size
    auto = cfg.prune == PRUNE_AUTO
    folder = checkpoint_folder(info.run_dir, ratio)
    resume = cfg.resume and (folder / "state.pt").exists() if auto else cfg.resume
    t0 = time.perf_counter()
    student = None
    if not resume:
        report.step(f"pruning {ratio:.0%} of the channels")
        student = prune_vgg16(inputs.model, ratio=ratio, image_size=size)
    hint = f"tlx optimize {info.run_dir} --prune {cfg.prune} --resume"
    student, distilled = distill(
        student,
        images=data.images,
        labels=data.labels,
        soft_targets=data.soft_targets,
        settings=_settings(info, cfg, ratio, len(data.labels)),
        folder=folder,
        resume=resume,
        device=str(resolve_device(cfg.distill_device)),
        resume_hint=hint,
        progress=report.callback,
    )
    shutil.rmtree(folder, ignore_errors=True)  # done: the checkpoint is not needed any more
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # RUN/distill/, when no other ratio left a checkpoint there
    report.step(f"r={ratio:.2f}: export, fold, int8")
    shape = VGGShape.of(student)
    plan = plan_fold(student, size)
    module = fold_vgg16(student, size) if plan.saves_parameters else student
    details = _details(info, shape, ratio, plan.saves_parameters, distilled.to_dict())
    built: list[tuple[VariantResult, Path]] = []
    fp32 = work / file_name("pruned", ratio, auto=auto)
    save_onnx(module, fp32, image_size=size)
    build_s = time.perf_counter() - t0
    int8 = work / file_name("pruned-int8", ratio, auto=auto)
    t1 = time.perf_counter()
    calibration = data.images[_calibration_rows(len(data.images), cfg)]
    quant = quantize_static_int8(fp32, int8, calibration_images=calibration)
    for variant, path, seconds, extra in (
        ("pruned", fp32, build_s, {}),
        ("pruned-int8", int8, build_s + time.perf_counter() - t1, {"quantization": quant}),
    ):
        gate = evaluate_onnx(
            path, inputs.images, inputs.labels, inputs.reference, cfg=cfg, variant=variant
        )
        result = VariantResult.judged(variant, path.name, gate, seconds, {**details, **extra})
        built.append((result, path))
    return built


def _settings(info: Run, cfg: OptimizeConfig, ratio: float, images: int) -> Any:
    from exporter.optimize.distill import DistillSettings

    return DistillSettings(
        epochs=cfg.distill_epochs,
        lr=cfg.distill_lr,
        batch=cfg.distill_batch,
        seed=cfg.seed,
        ratio=ratio,
        teacher_sha256=info.manifest.source.sha256 if info.has_manifest else "",
        images=images,
        image_size=info.preprocessing.image_size,
    )


def _calibration_rows(n: int, cfg: OptimizeConfig) -> np.ndarray:
    """A seeded choice of ``--calib-samples`` training images for the int8 ranges."""
    rng = np.random.default_rng([cfg.seed, 1])
    return np.sort(rng.choice(n, size=min(n, cfg.calib_samples), replace=False))


def _details(
    info: Run, shape: VGGShape, ratio: float, folded: bool, distilled: dict[str, Any]
) -> dict[str, Any]:
    """The facts of a pruned model for optimize.json and its manifest entry."""
    size = info.preprocessing.image_size
    teacher = VGGShape.full(shape.num_classes)
    return {
        "prune": {
            "ratio": ratio,
            "method": "Torch-Pruning MetaPruner, group L2 magnitude, channels rounded to 8",
            "shape": shape.to_dict(),
            "params": shape.parameters(size if folded else None),
            "macs": shape.macs(size, folded=folded),
            "teacher_params": teacher.parameters(),
            "teacher_macs": teacher.macs(size),
            "folded": folded,
        },
        "distill": distilled,
        "judge": "task",
    }


def build_pruned_variants(
    info: Run,
    manifest: Any,
    inputs: Any,
    *,
    cfg: OptimizeConfig,
    work: Path,
    report: Any,
) -> list[VariantResult]:
    """Every ratio of ``cfg`` (``auto``: until one passes); each file shipped or kept aside.

    Under ``auto`` the files of a ratio that passed take the plain names
    (``model.pruned.onnx``, ``model.pruned.int8.onnx``); every other ratio's files go to
    ``rejected/`` under names that carry their ratio.
    """
    from exporter.optimize.distill import checkpoint_folder

    auto = cfg.prune == PRUNE_AUTO
    ratios = list(cfg.prune_ratios)
    if auto and cfg.resume:  # the stopped search was at the ratio that left a checkpoint
        stopped = [r for r in ratios if (checkpoint_folder(info.run_dir, r) / "state.pt").exists()]
        if stopped:
            ratios = ratios[ratios.index(stopped[0]) :]
    report.step("loading the training images and the trained model's answers on them")
    data = load_training_set(info, inputs.model, cfg)
    out: list[VariantResult] = []
    for ratio in ratios:
        built = build_ratio(info, inputs, data, ratio=ratio, cfg=cfg, work=work, report=report)
        passed = any(r.status == "shipped" for r, _ in built)
        for result, path in built:
            if auto:
                result.details["search"] = "auto"
            if auto and passed and result.status == "shipped":
                final = work / VARIANT_FILES[result.variant]
                path.replace(final)
                path, result.artifact = final, final.name
            elif auto and not passed:
                result.reason = f"{result.reason}; auto tries a smaller ratio next"
            place(manifest, path, result, info=info)
            out.append(result)
        if auto and passed:
            break
    return out

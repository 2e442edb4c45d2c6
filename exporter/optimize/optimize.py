"""``tlx optimize``: faster deployment variants of a run, each gated before it ships.

Variants (all ONNX, run by ONNX Runtime):

========================  =========================  =========  ===========================
variant                   file                       precision  what it is
========================  =========================  =========  ===========================
``fold``                  ``model.fold.onnx``        fp32       pool → fc1 folded (fixed H×W)
``int8``                  ``model.int8.onnx``        int8       static QDQ quantization
``int8-dynamic``          ``model.int8-dynamic.onnx``  int8     weights-only classifier int8
``fold-int8``             ``model.fold.int8.onnx``   int8       both (fixed H×W)
``fp16``                  ``model.fp16.onnx``        fp16       fp16 weights and compute
========================  =========================  =========  ===========================

Each variant is evaluated with ONNX Runtime on the CPU against the eager fp32 model on
held-out validation images. A variant that passes is written atomically and added to
``manifest.json`` (so ``tlx verify`` and ``tlx bench`` pick it up); one that fails is kept
aside under ``rejected/`` and reported, never listed as shipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import OptimizeConfig, to_dict
from exporter.core.errors import InputFileError
from exporter.core.fsio import clean_stale_temps, write_json
from exporter.core.manifest import (
    Manifest,
    manifest_path,
)
from exporter.core.report import Progress
from exporter.core.runfolder import OPTIMIZE_JSON as REPORT_NAME
from exporter.core.runlock import locks_run
from exporter.core.safepath import guard
from exporter.optimize.build import (
    EVAL_BATCH,
    build_variant,
    evaluate_onnx,
    skipped_fold,
)
from exporter.optimize.report import time_built, write_optimize_md
from exporter.optimize.ship import (
    FOLDED,
    VARIANT_FILES,
    VariantResult,
    load_or_create_manifest,
    place,
    refuse_existing,
    require_resources,
)
from exporter.verify.judge import infer_reference

if TYPE_CHECKING:
    from torch import nn

    from exporter.core.runfolder import Run
    from exporter.optimize.fold import FoldPlan

SCHEMA_VERSION = 1
WORK_PREFIX = ".tlx-optimize-"  # scratch folder inside the run (same filesystem: atomic moves)


@dataclass
class OptimizeResult:
    """Outcome of :func:`optimize_run`."""

    run_dir: Path
    variants: list[VariantResult]
    report_path: Path
    manifest_path: Path
    timing: dict[str, Any] = field(default_factory=dict)  # batch-1 latency of every file

    @property
    def gate_failures(self) -> list[str]:
        """One line per variant that failed its gate (kept aside in ``rejected/``).

        Under ``--prune auto`` the ratios tried on the way to one that passed are the search,
        not failures; they fail the command only when no ratio passed.
        """
        auto = [v for v in self.variants if v.details.get("search") == "auto"]
        searched = any(v.status == "shipped" for v in auto)
        return [
            f"{v.variant} ({v.reason}), kept aside in rejected/"
            for v in self.variants
            if v.status == "rejected" and not (searched and v in auto)
        ]


@locks_run("optimize")
def optimize_run(
    run_dir: str | os.PathLike[str],
    cfg: OptimizeConfig,
    *,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Build, gate and ship the requested variants of a run; write ``optimize.json``.

    Returns every variant's status; rejected variants do not raise (the CLI decides the exit
    code).

    Raises:
        UsageError / InputFileError: bad run folder, existing variants without ``force``.
    """
    from exporter.core.envinfo import environment
    from exporter.core.runfolder import open_run

    info = open_run(run_dir)
    run = info.run_dir
    _clear_for_work(info, cfg)
    # Pruning: one step to load the training set, then prune and export per ratio (the
    # distillation reports its own steps in between); timing the variants is the last step.
    steps = 1 + len(cfg.variants) + (1 + 2 * len(cfg.prune_ratios) if cfg.prune else 0) + 1
    report = _Progress(progress, total=steps)
    manifest, dropped = load_or_create_manifest(info, force=cfg.force)
    refuse_existing(run, manifest, cfg)  # before any slow work
    report.step("loading the model and held-out images")
    inputs = _load_inputs(info, manifest, cfg)
    results = _build_variants(info, manifest, inputs, cfg=cfg, report=report)
    ordered = [results[v] for v in cfg.variants]
    if cfg.prune is not None:
        from exporter.optimize.pruning import build_pruned_variants

        with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=run) as tmp:
            ordered += build_pruned_variants(
                info, manifest, inputs, cfg=cfg, work=Path(tmp), report=report
            )
    report.step("timing every variant at batch 1 (ONNX Runtime, OpenVINO, eager)")
    timing = time_built(info, ordered)
    data = {
        "schema_version": SCHEMA_VERSION,
        "command": "optimize",
        "run_dir": str(run),
        "config": to_dict(cfg),
        "environment": environment("cpu"),
        "image_size": info.preprocessing.image_size,
        "fold_plan": inputs.plan.to_dict(),
        "eval_images": len(inputs.labels),
        "variants": [r.to_dict() for r in ordered],
        "timing": timing,
        "dropped_stale_artifacts": dropped,  # made from other weights (export's rule)
    }
    report_path = run / REPORT_NAME
    write_json(report_path, data)
    write_optimize_md(run, data)
    return OptimizeResult(run, ordered, report_path, manifest_path(run), timing)


def _clear_for_work(info: Run, cfg: OptimizeConfig) -> None:
    """Check memory and disk (before any slow work), then drop a killed run's leftovers."""
    run = info.run_dir
    require_resources(info, cfg, eval_batch=EVAL_BATCH)
    clean_stale_temps(run)
    for stale in run.glob(WORK_PREFIX + "*"):  # scratch of a killed earlier optimize
        shutil.rmtree(guard(stale), ignore_errors=True)


@dataclass
class _Inputs:
    """What every variant is built from and judged against."""

    model: nn.Module
    images: np.ndarray  # held-out validation images
    labels: np.ndarray
    reference: np.ndarray  # the eager model's logits on them
    calibration: np.ndarray | None  # training images, for the static int8 variants
    plan: FoldPlan


def _load_inputs(info: Run, manifest: Manifest, cfg: OptimizeConfig) -> _Inputs:
    """The eager model (hash-checked), held-out images and their logits, calibration images."""
    from exporter.model.vgg import load_reference_model
    from exporter.optimize.fold import plan_fold

    model = load_reference_model(info, expected=manifest.source)
    x_val, y_val = _load_images(info, cfg, cfg.eval_samples, split="val")
    ref_logits = infer_reference(model, x_val, EVAL_BATCH)
    x_cal = None
    if any(v in cfg.variants for v in ("int8", "fold-int8")):
        x_cal, _ = _load_images(info, cfg, cfg.calib_samples, split="train")
    plan = plan_fold(model, info.preprocessing.image_size)
    return _Inputs(model, x_val, y_val, ref_logits, x_cal, plan)


def _build_variants(
    info: Run,
    manifest: Manifest,
    inputs: _Inputs,
    *,
    cfg: OptimizeConfig,
    report: _Progress,
) -> dict[str, VariantResult]:
    """Build and gate every ONNX variant in a scratch folder; ship each or keep it aside."""
    run, image_size = info.run_dir, info.preprocessing.image_size
    results: dict[str, VariantResult] = {}
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=run) as tmp:
        for variant in cfg.variants:
            name = VARIANT_FILES[variant]
            report.step(f"{variant}: building {name}")
            if variant in FOLDED and not inputs.plan.saves_parameters:
                results[variant] = skipped_fold(variant, inputs.plan.to_dict(), image_size)
                continue
            t0 = time.perf_counter()
            built, details = build_variant(
                variant,
                inputs.model,
                Path(tmp),
                plan=inputs.plan,
                calibration=inputs.calibration,
                size=image_size,
            )
            gate = evaluate_onnx(
                built, inputs.images, inputs.labels, inputs.reference, cfg=cfg, variant=variant
            )
            result = VariantResult.judged(variant, name, gate, time.perf_counter() - t0, details)
            place(manifest, built, result, info=info)
            results[variant] = result
    return results


def _load_images(
    info: Run, cfg: OptimizeConfig, n: int, *, split: str
) -> tuple[np.ndarray, np.ndarray]:
    from exporter.data.datasets import load_eval_images

    try:
        return load_eval_images(info, n, split=split, seed=cfg.seed, data_dir=cfg.data_dir)
    except InputFileError as exc:  # the data moved or is gone: say how to point at it
        hint = "" if cfg.data_dir else " (pass --data-dir to say where the run's images are now)"
        raise InputFileError(f"{exc}{hint}") from exc


class _Progress:
    """Numbers the steps ("optimize 2/5: ...") for a one-line progress display."""

    def __init__(self, callback: Progress | None, *, total: int) -> None:
        self.callback, self.total, self.completed = callback, total, 0

    def step(self, description: str) -> None:
        self.completed += 1
        if self.callback:
            self.callback(
                f"optimize {self.completed}/{self.total}: {description}",
                self.completed - 1,
                self.total,
            )

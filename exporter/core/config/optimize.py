"""Settings of ``tlx optimize``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.errors import UsageError

OPTIMIZE_VARIANTS = ("fold", "int8", "int8-dynamic", "fold-int8", "fp16")
# The fast variants worth shipping by default (dynamic int8 is slower at batch 64:
# benchmarks/RESULTS.md, "tlx optimize").
DEFAULT_OPTIMIZE_VARIANTS = ("fold", "int8", "fold-int8")
# Built by --prune: a smaller model distilled from the run's own (not the same function, so
# judged by the task-level profile: accuracy drop and agreement, not logit tolerance).
PRUNED_VARIANTS = ("pruned", "pruned-int8")
PRUNE_AUTO = "auto"
# --prune auto tries these, most aggressive first, and stops at the first that passes.
AUTO_PRUNE_RATIOS = (0.75, 0.6, 0.5, 0.4, 0.3)


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of ``tlx optimize`` (validated on construction; messages name the CLI option).

    Attributes:
        variants: any of ``fold``, ``int8``, ``int8-dynamic``, ``fold-int8``, ``fp16``; None:
            ``fold``, ``int8``, ``fold-int8``, or none of them when ``prune`` is set.
        calib_samples: training images that calibrate static int8 activation ranges.
        eval_samples: held-out validation images for the gate of every variant.
        min_top1_agreement: int8/fp16 gate: top-1 agreement with eager fp32, in [0, 1]
            (the exact fp32 fold keeps verify's fp32 profile: 100% and atol 1e-4).
        max_accuracy_drop_points: gate: allowed accuracy loss versus eager, in points.
        force: overwrite variants that already exist.
        seed: chooses the calibration and evaluation images.
        prune: fraction of each convolution's channels to remove (0, 1), ``"auto"`` (try
            :data:`AUTO_PRUNE_RATIOS`, ship the fastest that passes), or None (no pruning).
        max_drop_points: pruned variants' budget: held-out accuracy may fall at most this many
            points below the trained model's.
        min_agreement: pruned variants: minimum top-1 agreement with the trained model.
        distill_epochs: epochs of knowledge distillation that recover a pruned model.
        distill_lr: AdamW learning rate of the distillation.
        distill_batch: images per distillation step.
        distill_samples: training images to distill on (None: all of the split).
        distill_device: ``cpu``, ``cuda`` or ``auto`` (CUDA when present).
        data_dir: where the training images are now, when not where train.json says.
        resume: continue a distillation stopped by a signal (its checkpoint is in the run).
    """

    variants: tuple[str, ...] | None = None
    calib_samples: int = 32
    eval_samples: int = 256
    min_top1_agreement: float = 0.99
    max_accuracy_drop_points: float = 0.5
    force: bool = False
    seed: int = 0
    prune: float | str | None = None
    max_drop_points: float = 1.0
    min_agreement: float = 0.9
    distill_epochs: int = 30
    distill_lr: float = 3e-4
    distill_batch: int = 64
    distill_samples: int | None = None
    distill_device: str = "auto"
    data_dir: str | None = None
    resume: bool = False

    @property
    def prune_ratios(self) -> tuple[float, ...]:
        """The ratios to try, most aggressive first (empty without --prune)."""
        if self.prune is None:
            return ()
        if self.prune == PRUNE_AUTO:
            return AUTO_PRUNE_RATIOS
        return (float(self.prune),)

    def __post_init__(self) -> None:
        self._check_prune()
        if self.variants is None:  # the exact variants, unless only pruning was asked for
            default = () if self.prune is not None else DEFAULT_OPTIMIZE_VARIANTS
            object.__setattr__(self, "variants", default)
        unknown = [v for v in self.variants if v not in OPTIMIZE_VARIANTS]
        if (not self.variants and self.prune is None) or unknown:
            raise UsageError(
                f"--variants {','.join(self.variants)!r}: choose from "
                f"{', '.join(OPTIMIZE_VARIANTS)}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise UsageError("--variants: each variant may appear only once")
        if self.calib_samples < 1:
            raise UsageError(f"--calib-samples {self.calib_samples}: must be >= 1")
        if self.eval_samples < 1:
            raise UsageError(f"--eval-samples {self.eval_samples}: must be >= 1")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise UsageError(f"--min-top1 {self.min_top1_agreement}: must be in [0, 1]")
        if self.max_accuracy_drop_points < 0:
            raise UsageError(f"--max-accuracy-drop {self.max_accuracy_drop_points}: must be >= 0")

    def _check_prune(self) -> None:
        if self.prune is not None and self.prune != PRUNE_AUTO:
            try:
                ratio = float(self.prune)
            except (TypeError, ValueError):
                ratio = float("nan")
            if not 0.0 < ratio < 1.0:  # NaN fails this too
                raise UsageError(
                    f"--prune {self.prune!r}: give the fraction of channels to remove, a number "
                    f"strictly between 0 and 1 (e.g. 0.5), or {PRUNE_AUTO}"
                )
            object.__setattr__(self, "prune", ratio)
        if not 0.0 <= self.max_drop_points <= 100.0:
            raise UsageError(f"--max-drop {self.max_drop_points}: must be in [0, 100] points")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError(f"--min-agreement {self.min_agreement}: must be in [0, 1]")
        if self.distill_epochs < 1:
            raise UsageError(f"--distill-epochs {self.distill_epochs}: must be >= 1")
        if not 0.0 < self.distill_lr < 1.0:
            raise UsageError(f"--distill-lr {self.distill_lr}: must be in (0, 1)")
        if self.distill_batch < 1:
            raise UsageError(f"--distill-batch {self.distill_batch}: must be >= 1")
        if self.distill_samples is not None and self.distill_samples < 1:
            raise UsageError(f"--distill-samples {self.distill_samples}: must be >= 1")
        if self.distill_device not in ("cpu", "cuda", "auto"):
            raise UsageError(
                f"--distill-device {self.distill_device!r}: choose from cpu, cuda, auto"
            )
        if self.resume and self.prune is None:
            raise UsageError("--resume continues a pruned model's distillation: pass --prune too")

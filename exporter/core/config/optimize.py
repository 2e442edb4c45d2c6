"""Settings of ``tlx optimize``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.config.common import opt, parse_names
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

    Each field's help is its option's; the exact fp32 fold keeps verify's fp32 profile (100%
    agreement, atol 1e-4) instead of ``min_top1_agreement``.
    """

    variants: tuple[str, ...] | None = opt(
        None,
        parse=parse_names,
        help=f"Comma-separated, from: {', '.join(OPTIMIZE_VARIANTS)}. fold: pool→fc1 folded "
        "(fixed H×W); int8: static QDQ; int8-dynamic: weights-only (slower at large batches); "
        "fold-int8: both; fp16: fp16 weights and compute. Default: "
        f"{','.join(DEFAULT_OPTIMIZE_VARIANTS)}, or none of them with --prune.",
    )
    prune: float | str | None = opt(
        None,
        help="Also build a smaller model: remove this fraction of every convolution's channels "
        "(0-1, e.g. 0.5; fc layers keep (1-ratio)² of their neurons), distill it from the "
        "trained model, export it as `pruned` (fp32) and `pruned-int8`, and gate both by "
        f"--max-drop. 'auto': try {', '.join(map(str, AUTO_PRUNE_RATIOS))} and ship the most "
        "pruned that passes.",
    )
    max_drop_points: float = opt(
        1.0,
        flags=("--max-drop",),
        help="Pruned variants: the accuracy budget, in points below the trained model on the "
        "held-out images.",
    )
    min_agreement: float = opt(
        0.9, help="Pruned variants: minimum top-1 agreement with the trained model (0-1)."
    )
    distill_epochs: int = opt(30, help="Epochs of distillation per pruned model.")
    distill_lr: float = opt(3e-4, help="AdamW learning rate of the distillation.")
    distill_batch: int = opt(64, help="Images per distillation step.")
    distill_samples: int | None = opt(
        None, help="Training images to distill on (default: the whole training split)."
    )
    distill_device: str = opt("auto", help="cpu, cuda or auto (CUDA when present).")
    data_dir: str | None = opt(
        None, help="Where the run's training images are now, if they moved since `tlx train`."
    )
    resume: bool = opt(
        False,
        flags=("--resume",),
        help="Continue a distillation that a signal stopped (with --prune).",
    )
    calib_samples: int = opt(32, help="Training images that calibrate int8 activations.")
    eval_samples: int = opt(256, help="Held-out validation images every variant is gated on.")
    min_top1_agreement: float = opt(
        0.99,
        flags=("--min-top1",),
        help="int8/fp16 gate: minimum top-1 agreement with eager (0-1).",
    )
    max_accuracy_drop_points: float = opt(
        0.5, flags=("--max-accuracy-drop",), help="Gate: largest held-out accuracy drop, in points."
    )
    seed: int = opt(0, help="Chooses the calibration and evaluation images.")
    force: bool = opt(False, flags=("--force",), help="Rebuild variants that already exist.")

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

"""Settings of ``tlx optimize``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.errors import UsageError

OPTIMIZE_VARIANTS = ("fold", "int8", "int8-dynamic", "fold-int8", "fp16")
# The fast variants worth shipping by default (dynamic int8 is slower at batch 64:
# benchmarks/RESULTS.md, "tlx optimize").
DEFAULT_OPTIMIZE_VARIANTS = ("fold", "int8", "fold-int8")


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of ``tlx optimize`` (validated on construction; messages name the CLI option).

    Attributes:
        variants: any of ``fold``, ``int8``, ``int8-dynamic``, ``fold-int8``, ``fp16``.
        calib_samples: training images that calibrate static int8 activation ranges.
        eval_samples: held-out validation images for the gate of every variant.
        min_top1_agreement: int8/fp16 gate: top-1 agreement with eager fp32, in [0, 1]
            (the exact fp32 fold keeps verify's fp32 profile: 100% and atol 1e-4).
        max_accuracy_drop_points: gate: allowed accuracy loss versus eager, in points.
        force: overwrite variants that already exist.
        seed: chooses the calibration and evaluation images.
    """

    variants: tuple[str, ...] = DEFAULT_OPTIMIZE_VARIANTS
    calib_samples: int = 32
    eval_samples: int = 256
    min_top1_agreement: float = 0.99
    max_accuracy_drop_points: float = 0.5
    force: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in OPTIMIZE_VARIANTS]
        if not self.variants or unknown:
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

"""Settings of ``tlx verify``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.core.choices import ALL, CPU, CUDA
from exporter.core.errors import UsageError


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of ``tlx verify`` (parity of every artifact against the eager reference).

    Attributes:
        runtimes: runtime names, or ``("all",)`` for every registered runtime that can run
            here (unavailable ones are then skipped with the reason instead of failing).
        device: ``cpu`` or ``cuda``; the reference always runs in fp32 on the CPU.
        samples: held-out validation images (0 = random inputs only).
        batch_sizes: batch sizes of the seeded random inputs (1, an odd one, the largest).
        seed: seed of the random inputs.
        atol: override of the profile's absolute tolerance on logits (None = profile).
        rtol: override of the profile's relative tolerance (None = profile).
        min_top1: override of the profile's minimum top-1 agreement in [0, 1] (None = profile).
        localize: on failure, find the first layer whose activation diverges.
        threads: intra-op threads for the runtimes (None: the cores this process may use).
    """

    runtimes: tuple[str, ...] = (ALL,)
    device: str = "cpu"
    # 256 held-out images: enough that one flip (0.39 points) stays inside the int8
    # profile's 0.5-point accuracy limit; the same count `tlx optimize` gates on.
    samples: int = 256
    batch_sizes: tuple[int, ...] = (1, 3, 8)
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    min_top1: float | None = None
    localize: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UsageError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if self.samples < 0:
            raise UsageError(f"--samples must be >= 0, got {self.samples}")
        if self.device != CPU and not self.device.startswith(CUDA):
            raise UsageError(f"--device {self.device!r}: choose cpu or cuda")
        check_tolerance_overrides(self.atol, self.rtol, self.min_top1)


def check_tolerance_overrides(
    atol: float | None, rtol: float | None, min_top1: float | None
) -> None:
    """``--atol``/``--rtol``/``--min-top1``: None keeps the profile's value; else in range."""
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{flag} must be a finite number >= 0, got {value}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"--min-top1 must be in [0, 1] (a fraction), got {min_top1}")

"""Settings of ``tlx verify``."""

from __future__ import annotations

from dataclasses import dataclass


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
        threads: intra-op threads for the runtimes (None = library default).
    """

    runtimes: tuple[str, ...] = ("all",)
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

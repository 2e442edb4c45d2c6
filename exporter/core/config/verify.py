"""Settings of ``tlx verify``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.core.choices import ALL, DEVICE_HELP, device_kind
from exporter.core.config.common import RUNTIMES_HELP, opt, parse_batch_sizes, parse_names
from exporter.core.config.serve import DEFAULT_MODEL_NAME
from exporter.core.errors import UsageError


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of ``tlx verify`` (parity of every artifact against the eager reference).

    Each field's help is its option's. The reference always runs in fp32 on the CPU;
    ``atol``/``rtol``/``min_top1`` of None keep the tolerance profile of each precision.
    """

    runtimes: tuple[str, ...] = opt((ALL,), parse=parse_names, help=RUNTIMES_HELP)
    device: str = opt("cpu", help=f"Where the candidates run: {DEVICE_HELP}")
    # 256 held-out images: enough that one flip (0.39 points) stays inside the int8
    # profile's 0.5-point accuracy limit; the same count `tlx optimize` gates on.
    samples: int = opt(256, min=0, help="Held-out validation images (0: random inputs only).")
    batch_sizes: tuple[int, ...] = opt(
        (1, 3, 8),
        parse=lambda text: parse_batch_sizes(text, example="1,3,8"),
        help="Batch sizes of the seeded random inputs, e.g. 1,3,8.",
    )
    seed: int = opt(0, help="Seed of the random inputs.")
    atol: float | None = opt(None, help="Absolute logit tolerance (default: per precision).")
    rtol: float | None = opt(None, help="Relative logit tolerance (default: per precision).")
    min_top1: float | None = opt(
        None, help="Minimum top-1 agreement as a fraction, e.g. 0.995 (default: per precision)."
    )
    localize: bool = opt(False, help="For a failing artifact, find the first layer that diverges.")
    threads: int | None = opt(
        None, min=1, help="CPU threads for the runtimes (default: the usable cores)."
    )

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UsageError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if self.samples < 0:
            raise UsageError(f"--samples must be >= 0, got {self.samples}")
        device_kind(self.device)
        check_tolerance_overrides(self.atol, self.rtol, self.min_top1)


@dataclass(frozen=True)
class VerifyTarget:
    """What ``tlx verify`` checks instead of the run's artifacts on the local runtimes: a running
    server, or the run's signature. Each field's help is its option's."""

    server: str | None = opt(
        None,
        help="Verify a running server (KServe v2 URL) instead of the local runtimes; writes "
        "verify-server.json/.md.",
    )
    model_name: str = opt(DEFAULT_MODEL_NAME, help="With --server: the served model's name.")
    public_key: str | None = opt(
        None,
        path=True,
        help="Check the run against its model.sig with this PEM public key instead of running "
        "parity (nothing is written): exit 0 if every file matches, 2 naming the first file "
        "that does not.",
    )


def check_tolerance_overrides(
    atol: float | None, rtol: float | None, min_top1: float | None
) -> None:
    """``--atol``/``--rtol``/``--min-top1``: None keeps the profile's value; else in range."""
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"{flag} must be a finite number >= 0, got {value}")
    if min_top1 is not None and not 0.0 <= min_top1 <= 1.0:
        raise UsageError(f"--min-top1 must be in [0, 1] (a fraction), got {min_top1}")

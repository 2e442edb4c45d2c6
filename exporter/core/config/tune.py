"""Settings of ``tlx tune``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.config.common import opt
from exporter.core.errors import UsageError

MAX_TUNE_CPUS = 1024


@dataclass(frozen=True)
class TuneConfig:
    """Settings of ``tlx tune`` (validated on construction; messages name the CLI option).

    Each field's help is its option's; ``min_window_s`` is the shortest measuring window of
    one trial and ``seed`` seeds the request image.
    """

    cpus: int | None = opt(
        None,
        min=1,
        help="Cores the server may use in total, e.g. the target pod's CPU limit (default: the "
        "cores this process may use: affinity and cgroup quota).",
    )
    budget_s: float = opt(
        60.0, flags=("--budget",), help="Seconds the search may take, loading included."
    )
    concurrency: int = opt(8, help="Single-image requests in flight during each trial.")
    variant: str | None = opt(None, help="Tune this artifact (default: the recommended one).")
    runtime: str | None = opt(None, help="Runtime that runs it (default: chosen with it).")
    min_window_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cpus is not None and not 1 <= self.cpus <= MAX_TUNE_CPUS:
            raise UsageError(f"--cpus {self.cpus}: give 1 to {MAX_TUNE_CPUS}")
        if not self.budget_s >= 5:
            raise UsageError(f"--budget {self.budget_s}: give at least 5 seconds")
        if not 1 <= self.concurrency <= 1024:
            raise UsageError(f"--concurrency {self.concurrency}: give 1 to 1024")
        if not self.min_window_s > 0:
            raise UsageError(f"min_window_s {self.min_window_s}: must be > 0 seconds")

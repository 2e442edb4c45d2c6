"""Settings of ``tlx tune``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.errors import UsageError

MAX_TUNE_CPUS = 1024


@dataclass(frozen=True)
class TuneConfig:
    """Settings of ``tlx tune`` (validated on construction; messages name the CLI option).

    Attributes:
        cpus: cores the server may use in total (a target pod's CPU limit); None: the cores
            this process may use here (affinity and cgroup quota).
        budget_s: the search's wall-clock budget, loading included.
        concurrency: requests in flight during each trial (single-image requests).
        variant: tune this artifact instead of the run's recommended one.
        runtime: the runtime that runs it (None: chosen with the artifact).
        min_window_s: the shortest measuring window of one trial.
        seed: seed of the request image.
    """

    cpus: int | None = None
    budget_s: float = 60.0
    concurrency: int = 8
    variant: str | None = None
    runtime: str | None = None
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

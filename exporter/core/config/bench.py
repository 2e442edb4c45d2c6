"""Settings of ``tlx bench``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import ALL, BENCH_PRECISIONS, DEVICES
from exporter.core.config.common import MAX_BATCH_SIZE
from exporter.core.errors import UsageError


@dataclass(frozen=True)
class BenchConfig:
    """Settings of ``tlx bench`` (validated on construction; messages name the CLI option).

    Attributes:
        runtimes: registry names, or ``("all",)`` for every runtime that can run here
            (unavailable ones are then skipped with a reason instead of failing).
        device: ``cpu`` or ``cuda``.
        batch_sizes: batch sizes to time, each a separate cell per runtime.
        precision: ``fp32``, ``fp16`` or ``bf16`` (bf16 is slow on CPUs without AMX).
        warmup: untimed iterations per runtime × batch before timing.
        iters: timed iterations per runtime × batch (ignored when ``min_time_s`` is set).
        min_time_s: time each runtime × batch for at least this many seconds instead.
        iters_per_round: timed iterations per cell per round; rounds interleave the cells so
            that machine drift hits every runtime alike.
        threads: CPU threads for torch and ONNX Runtime; None: the cores this process may use
            (``core/machine.py``; recorded).
        seed: seed of the random input batches shared by every runtime.
        reference_runtime: the runtime speed-ups are computed against.
        compare: a baseline ``bench.json`` to gate against.
        max_regression_pct: allowed p50 slow-down versus the baseline, in percent.
        out_dir: where bench.json/.md/.csv/.png go; None = the run folder.
        tf32: on CUDA, let fp32 matmuls/convolutions use TF32 (rows then say ``tf32``);
            False times IEEE fp32.
        profile: after timing, profile each ONNX artifact × runtime per operator (its own
            profiler, on the smallest batch size) into bench.json/.md ``profile``.
        profile_runs: profiled runs per artifact × runtime (after 3 warm-ups).
    """

    runtimes: tuple[str, ...] = (ALL,)
    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    precision: str = "fp32"
    warmup: int = 5
    iters: int = 50
    min_time_s: float | None = None
    iters_per_round: int = 5
    threads: int | None = None
    seed: int = 0
    reference_runtime: str = "eager"
    compare: str | None = None
    max_regression_pct: float = 10.0
    out_dir: str | None = None
    tf32: bool = False
    profile: bool = False
    profile_runs: int = 10

    def __post_init__(self) -> None:
        if not self.runtimes or any(not r.strip() for r in self.runtimes):
            raise UsageError("--runtimes: give a comma-separated list of runtimes, or 'all'")
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.precision not in BENCH_PRECISIONS:
            raise UsageError(
                f"--precision {self.precision!r}: choose one of {', '.join(BENCH_PRECISIONS)}"
            )
        if not self.batch_sizes or any(not 1 <= int(b) <= MAX_BATCH_SIZE for b in self.batch_sizes):
            raise UsageError(
                f"--batch-sizes: give integers from 1 to {MAX_BATCH_SIZE}, e.g. 1,8,32"
            )
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise UsageError("--batch-sizes: each batch size may appear only once")
        if self.warmup < 0:
            raise UsageError(f"--warmup {self.warmup}: must be >= 0")
        if self.iters < 2:
            raise UsageError(f"--iters {self.iters}: need at least 2 timed iterations")
        if self.min_time_s is not None and self.min_time_s <= 0:
            raise UsageError(f"--min-time {self.min_time_s}: must be > 0 seconds")
        if self.iters_per_round < 1:
            raise UsageError(f"iters_per_round {self.iters_per_round}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        if self.profile_runs < 1:
            raise UsageError(f"--profile-runs {self.profile_runs}: must be >= 1")
        if self.max_regression_pct < 0:
            raise UsageError(f"--max-regression {self.max_regression_pct}: must be >= 0 percent")

    @property
    def all_runtimes(self) -> bool:
        """True when the user asked for every runtime (unavailable ones are then skipped)."""
        return ALL in self.runtimes

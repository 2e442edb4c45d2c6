"""Settings of ``tlx bench``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import ALL, BENCH_PRECISIONS, DEVICE_HELP, device_kind
from exporter.core.config.common import (
    MAX_BATCH_SIZE,
    RUNTIMES_HELP,
    opt,
    parse_batch_sizes,
    parse_names,
)
from exporter.core.errors import UsageError


@dataclass(frozen=True)
class BenchConfig:
    """Settings of ``tlx bench`` (validated on construction; messages name the CLI option).

    Each field's help is its option's. ``runtimes=("all",)`` times every runtime that can run
    here and skips the others with the reason; a named one that cannot run fails. Rounds of
    ``iters_per_round`` timed iterations interleave the cells, so that machine drift hits every
    runtime alike; ``seed`` seeds the input batches every runtime shares; speed-ups are
    computed against ``reference_runtime``.
    """

    runtimes: tuple[str, ...] = opt((ALL,), parse=parse_names, help=RUNTIMES_HELP)
    device: str = opt("cpu", help=f"Where to run: {DEVICE_HELP}")
    batch_sizes: tuple[int, ...] = opt(
        (1, 8, 32), parse=parse_batch_sizes, help="Comma-separated batch sizes, e.g. 1,8,32."
    )
    precision: str = opt(
        "fp32",
        choices=BENCH_PRECISIONS,
        help="Compute precision (bf16 is slow on CPUs without AMX).",
    )
    warmup: int = opt(5, help="Untimed iterations per runtime x batch.")
    iters: int = opt(50, help="Timed iterations per runtime x batch.")
    min_time_s: float | None = opt(
        None,
        flags=("--min-time",),
        help="Instead of --iters: time each runtime x batch for at least S seconds.",
    )
    iters_per_round: int = 5
    threads: int | None = opt(
        None,
        help="CPU threads for torch and ONNX Runtime (default: the cores this process may use: "
        "affinity and cgroup quota; recorded).",
    )
    seed: int = 0
    reference_runtime: str = "eager"
    compare: str | None = opt(
        None, path=True, help="A baseline bench.json: exit 1 when a runtime's p50 regressed."
    )
    max_regression_pct: float = opt(
        10.0,
        flags=("--max-regression",),
        help="Allowed p50 slow-down in percent; it must also exceed the noise band "
        "max(p90 - p50) of both reports to fail.",
    )
    out_dir: str | None = opt(
        None,
        flags=("--out",),
        path=True,
        help="Folder for bench.json/.md/.csv/.png (default: the run folder).",
    )
    tf32: bool = opt(
        False,
        flags=("--tf32/--no-tf32",),
        help="CUDA fp32: allow TF32 matmuls/convolutions (rows say tf32) or time IEEE fp32.",
    )
    profile: bool = opt(
        False,
        flags=("--profile",),
        help="Also profile each ONNX artifact x runtime per operator (ORT's profiler, "
        "OpenVINO's counters): bench.md/json `profile` and bench-profile.png.",
    )
    profile_runs: int = opt(10, min=1, help="Profiled runs per artifact x runtime with --profile.")

    def __post_init__(self) -> None:
        if not self.runtimes or any(not r.strip() for r in self.runtimes):
            raise UsageError("--runtimes: give a comma-separated list of runtimes, or 'all'")
        device_kind(self.device)
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

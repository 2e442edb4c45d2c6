"""Step timeouts under one hard deadline, for benchmark suites run in a time-boxed call.

``benchmarks/gpu_suite.sh`` runs on a device machine lent for one command of at most a few
minutes: every step gets its own timeout, cut down to what the deadline still leaves after
a reserve for the summary and the archive, and a step that would get less than a useful
minimum is skipped. The arithmetic lives here, where it is tested; the script asks it before
each step::

    python -m exporter.bench.deadline --elapsed 300 --total 510 --step 200 --reserve 30
    180
"""

from __future__ import annotations

import argparse
import sys


def step_timeout(
    *,
    elapsed_s: float,
    total_s: float,
    step_timeout_s: float,
    reserve_s: float = 0.0,
    min_step_s: float = 1.0,
) -> int:
    """Whole seconds the next step may run; 0 means "skip it: the deadline is too close".

    Args:
        elapsed_s: seconds since the suite started.
        total_s: the hard deadline, counted from the start.
        step_timeout_s: the step's own limit.
        reserve_s: seconds kept back for what must run after every step (summary, archive).
        min_step_s: below this a step could not finish anything useful and is skipped.

    Raises:
        ValueError: a negative or non-finite argument, or ``min_step_s`` < 1.
    """
    values = {
        "elapsed": elapsed_s,
        "total": total_s,
        "step": step_timeout_s,
        "reserve": reserve_s,
        "min": min_step_s,
    }
    for name, value in values.items():
        if not (value == value and abs(value) != float("inf")) or value < 0:  # NaN/inf/negative
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}")
    if min_step_s < 1:
        raise ValueError(f"--min must be >= 1 second, got {min_step_s}")
    left = int(total_s - reserve_s - elapsed_s)  # floor: never promise a second not there
    allowed = min(int(step_timeout_s), left)
    return allowed if allowed >= min_step_s else 0


def main(argv: list[str] | None = None) -> int:
    """Print :func:`step_timeout` for the command-line arguments; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.bench.deadline",
        description="Seconds the next suite step may run under a hard deadline (0 = skip).",
    )
    parser.add_argument("--elapsed", type=float, required=True, help="seconds since start")
    parser.add_argument("--total", type=float, required=True, help="hard deadline, seconds")
    parser.add_argument("--step", type=float, required=True, help="the step's own timeout")
    parser.add_argument("--reserve", type=float, default=0.0, help="kept for the end")
    parser.add_argument("--min", type=float, default=1.0, help="skip below this many seconds")
    args = parser.parse_args(argv)  # bad syntax: argparse prints usage and exits 2
    try:
        seconds = step_timeout(
            elapsed_s=args.elapsed,
            total_s=args.total,
            step_timeout_s=args.step,
            reserve_s=args.reserve,
            min_step_s=args.min,
        )
    except ValueError as exc:
        print(f"exporter.bench.deadline: {exc}", file=sys.stderr)
        return 2
    print(seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

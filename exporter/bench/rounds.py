"""Interleaved timing rounds over loaded runtimes: the benchmark scripts' way to time.

``tlx bench`` plans, loads and records failures itself (``harness.py``); scripts under
``benchmarks/`` that compare a few runtimes on one input call :func:`time_runtimes` instead
of writing their own loop. Both take every number with :class:`~exporter.bench.measure.Timer`
and both visit the candidates in :func:`rotated` order, so a script's numbers are taken the way
``tlx bench`` takes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from exporter.bench.measure import Timer
from exporter.core.errors import UsageError
from exporter.runtimes.base import Runtime

T = TypeVar("T")


def rotated(items: Sequence[T], round_no: int) -> list[T]:
    """The visiting order of round ``round_no``: the start moves one item later each round.

    No candidate always runs right after the same other one, so what one leaves behind
    (a warm cache, a busy thread pool, a clocked-down core) is spread over all of them.
    """
    if not items:
        return []
    shift = round_no % len(items)
    return [*items[shift:], *items[:shift]]


def time_runtimes(
    runtimes: Mapping[str, Runtime],
    x: np.ndarray,
    *,
    rounds: int,
    per_round: int,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Time loaded runtimes on one input, interleaved in rounds; per-call latencies in ms.

    Every runtime prepares ``x`` once (outside the timed calls, as ``tlx bench`` does) and
    runs ``warmup`` untimed calls, in the mapping's order. Then each of ``rounds`` rounds
    visits every runtime for ``per_round`` timed calls, in :func:`rotated` order, so machine
    drift hits all of them alike. The caller loads and closes the runtimes.

    Args:
        runtimes: label → a loaded runtime (from the registry: ``get_runtime(name)``).
        x: the float32 NCHW input every runtime gets.
        rounds: how many rounds (each runtime gets ``rounds * per_round`` samples).
        per_round: timed calls per runtime per round.
        warmup: untimed calls per runtime before the first round.

    Returns:
        label → its ``rounds * per_round`` per-call latencies in milliseconds, in call order.

    Raises:
        UsageError: no runtimes, or ``rounds`` / ``per_round`` below 1, or ``warmup`` below 0.
        Exception: whatever a runtime raised, unchanged, with a note naming its label.
    """
    if not runtimes:
        raise UsageError("time_runtimes: no runtimes to time")
    if rounds < 1 or per_round < 1 or warmup < 0:
        raise UsageError(
            f"time_runtimes: rounds={rounds} and per_round={per_round} must be >= 1, "
            f"warmup={warmup} >= 0"
        )
    labels = list(runtimes)
    timers = {label: Timer(rt.device) for label, rt in runtimes.items()}
    prepared: dict[str, Any] = {}
    for label in labels:
        with _naming(label):
            prepared[label] = runtimes[label].prepare(x)
            for _ in range(warmup):
                timers[label].time_ms(runtimes[label], prepared[label])
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for round_no in range(rounds):
        for label in rotated(labels, round_no):
            runtime, timer, inputs = runtimes[label], timers[label], prepared[label]
            with _naming(label):
                samples[label].extend(timer.time_ms(runtime, inputs) for _ in range(per_round))
    return samples


@contextlib.contextmanager
def _naming(label: str) -> Iterator[None]:
    """Add "while timing <label>" to an exception raised inside (its type and text kept)."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"while timing {label!r}")
        raise

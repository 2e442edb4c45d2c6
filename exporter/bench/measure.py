"""The bench's instruments: the timer and its rounds, memory, OOM, closed-loop client records.

Kept apart from the harness (``harness.py``) so that how one number is taken can be read in
one place, and so the memory arithmetic can be tested without a GPU. :func:`time_runtimes`
is the whole loop for callers that time a few loaded runtimes on one input (``tlx
optimize``'s timing, the scripts in ``benchmarks/``); ``tlx bench``'s harness plans, records
failures and stops by time itself, with the same :class:`Timer` and :func:`rotated` order.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from exporter.core.errors import UsageError

if TYPE_CHECKING:
    from exporter.runtimes.base import Runtime

MAX_ERROR_SAMPLES = 5


def current_rss_mb() -> float | None:
    """This process's resident set size now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # the file says kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float | None:
    """This process's peak resident set size (Linux: VmHWM; None where ``resource`` is absent)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means "out of memory" (host, torch CUDA or ONNX Runtime allocator)."""
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text


def close_quietly(runtime: Any) -> None:
    """Close a runtime (if any) after a failure: the original error matters more."""
    if runtime is not None:
        with contextlib.suppress(Exception):
            runtime.close()


class Timer:
    """CUDA events on a CUDA device, ``perf_counter`` after synchronize on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.kind = "cuda_event" if self.cuda else "perf_counter"
        if self.cuda:
            import torch

            self._torch = torch

    def time_ms(self, runtime: Any, prepared: Any) -> float:
        if self.cuda:
            start = self._torch.cuda.Event(enable_timing=True)
            end = self._torch.cuda.Event(enable_timing=True)
            start.record()
            out = runtime.run(prepared)
            runtime.synchronize()  # runtimes on their own streams (ORT) finish here
            end.record()
            end.synchronize()
            del out
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        out = runtime.run(prepared)
        runtime.synchronize()
        elapsed = time.perf_counter() - t0
        del out
        return elapsed * 1000.0


def runtime_peak_mb(load_mb: float | None, working_mb: float | None) -> float | None:
    """One runtime's device memory at one batch size: its own weights plus its working set.

    Every loaded runtime keeps its weights on the device, so the raw allocator peak would
    count all of them. ``working_mb`` is the peak over the cell's own baseline (what was in
    use when its peak statistics were reset, the other runtimes' weights included) and the
    runtime's own load-time growth ``load_mb`` is added back.
    """
    if working_mb is None:
        return None
    return max(0.0, working_mb) + max(0.0, load_mb or 0.0)


class DeviceMemory:
    """Device memory readings for one device: torch's allocator and the device as a whole.

    ONNX Runtime allocates through its own arena, invisible to torch's counters, so a
    runtime reports the larger of the two growths (``cudaMemGetInfo`` sees every allocator
    on the device, but also only grows when an arena reserves more). On a CPU device every
    reading is None.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        if self.cuda:
            import torch

            self._torch = torch

    def used_mb(self) -> tuple[float, float] | None:
        """(torch allocated, device-wide used) now, in MiB."""
        if not self.cuda:
            return None
        free, total = self._torch.cuda.mem_get_info()
        return self._torch.cuda.memory_allocated() / 2**20, (total - free) / 2**20

    def growth_mb(self, before: tuple[float, float] | None) -> float | None:
        """How much either reading grew since ``before`` (the larger of the two)."""
        now = self.used_mb()
        if before is None or now is None:
            return None
        return max(now[0] - before[0], now[1] - before[1], 0.0)

    def reset_peak(self) -> tuple[float, float] | None:
        """Start a peak window; returns the baseline readings."""
        if not self.cuda:
            return None
        self._torch.cuda.synchronize()
        self._torch.cuda.reset_peak_memory_stats()
        return self.used_mb()

    def peak_over(self, baseline: tuple[float, float] | None) -> float | None:
        """The largest growth above ``baseline`` seen since :meth:`reset_peak`."""
        if baseline is None or not self.cuda:
            return None
        self._torch.cuda.synchronize()
        torch_peak = self._torch.cuda.max_memory_allocated() / 2**20 - baseline[0]
        now = self.used_mb()
        device_growth = (now[1] - baseline[1]) if now is not None else 0.0
        return max(torch_peak, device_growth, 0.0)

    def free_cached(self) -> None:
        if self.cuda:
            self._torch.cuda.empty_cache()


@dataclass
class Completions:
    """What closed-loop client threads saw (``tlx loadtest``, ``tlx tune``): appended under
    a lock by the clients, read by the thread that times the windows."""

    done_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, done: float, latency: float, error: str | None) -> None:
        with self.lock:
            self.done_s.append(done)
            self.latency_s.append(latency)
            self.ok.append(error is None)
            if error and len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(error)

    def count(self) -> int:
        return len(self.ok)

    def between(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Latencies and ok flags of requests that completed in ``[start, end)``."""
        with self.lock:
            done = np.asarray(self.done_s)
            lat = np.asarray(self.latency_s)
            ok = np.asarray(self.ok, dtype=bool)
        mask = (done >= start) & (done < end)
        return lat[mask], ok[mask]


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

"""The bench's instruments: the timer, host and device memory, and error classification.

Kept apart from the harness (``bench.py``) so that how one number is taken can be read in
one place, and so the memory arithmetic can be tested without a GPU.
"""

from __future__ import annotations

import time
from typing import Any


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # the file says kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_mb() -> float | None:
    """This process's resident set size now (Linux /proc; None elsewhere)."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """This process's peak resident set size (VmHWM, or getrusage where /proc is absent)."""
    peak = _proc_status_mb("VmHWM")
    if peak is None:
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        except (ImportError, OSError):
            return None
    return peak


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means "out of memory" (host, torch CUDA or ONNX Runtime allocator)."""
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text


def error_text(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 300 characters of message."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


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

"""The measuring loop of ``tlx bench``: load, cold start, warm-up, interleaved timed rounds.

``bench.py`` plans and reports (its docstring says how a number is made); this module is
where each number is taken, with the instruments of ``measure.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.bench.measure import (
    DeviceMemory,
    Timer,
    close_quietly,
    current_rss_mb,
    is_oom,
    rotated,
    runtime_peak_mb,
)
from exporter.bench.result import (
    ERROR,
    MIN_SAMPLES,
    OK,
    OOM,
    SKIPPED,
    CellResult,
    RuntimeResult,
)
from exporter.core.config import BenchConfig
from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.core.report import Progress
from exporter.runtimes.base import error_line


@dataclass
class _Live:
    """A loaded runtime and its per-batch prepared inputs (kept out of the results)."""

    result: RuntimeResult
    runtime: Any
    prepared: dict[int, Any] = field(default_factory=dict)


def measure(
    pairs: list[tuple[type, Any]],
    cfg: BenchConfig,
    *,
    threads: int,
    inputs: dict[int, np.ndarray],
    skipped: list[dict[str, Any]],
    progress: Progress | None,
) -> list[RuntimeResult]:
    """Load every pair, warm up, time in rounds; unloadable runtimes go to ``skipped``.

    Raises:
        RuntimeUnavailable: not one runtime could load (exit 3), with every reason.
    """
    report_progress = progress or (lambda *_: None)
    timer, memory = Timer(cfg.device), DeviceMemory(cfg.device)
    live: list[_Live] = []
    results: list[RuntimeResult] = []
    try:
        for i, (cls, artifact) in enumerate(pairs):
            report_progress(f"loading {cls.name} ({artifact.name})", i, len(pairs))
            item = _load_one(cls, artifact, cfg, threads=threads, inputs=inputs, memory=memory)
            if isinstance(item, dict):  # could not load here: recorded, the others go on
                skipped.append(item)
                continue
            results.append(item.result)
            if item.result.status == OK:
                live.append(item)
        if not results and skipped:
            reasons = "; ".join(f"{s['runtime']}: {s['reason']}" for s in skipped)
            raise RuntimeUnavailable(f"no runtime could run on --device {cfg.device}: {reasons}")
        _warm_up(live, cfg, inputs=inputs, timer=timer, memory=memory, progress=report_progress)
        _timed_rounds(live, cfg, timer=timer, progress=report_progress)
    finally:
        for item in live:
            item.prepared.clear()
            close_quietly(item.runtime)
    return results


def _load_one(
    cls: type,
    artifact: Any,
    cfg: BenchConfig,
    *,
    threads: int,
    inputs: dict[int, np.ndarray],
    memory: DeviceMemory,
) -> _Live | dict[str, str]:
    """Load one runtime and run its first inference (the cold start).

    Returns the live runtime (or its recorded error), or a ``skipped`` entry when it cannot
    run on this machine (RuntimeUnavailable: a missing package, a provider that fell back).
    """
    result = RuntimeResult(runtime=cls.name, artifact=artifact.name)
    rss0, mem0 = current_rss_mb(), memory.used_mb()
    runtime = None
    try:
        t0 = time.perf_counter()
        options = {"tf32": cfg.tf32, "batch_sizes": tuple(sorted(inputs))}
        runtime = cls(
            artifact, cfg.device, precision=cfg.precision, threads=threads, options=options
        )
        # Known before load, so even a failed row says what it would have run.
        result.describe = {"precision": runtime.effective_precision()}
        runtime.load()
        result.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        runtime.infer(inputs[min(inputs)])  # host in, host out: what a fresh process pays
        result.first_inference_s = time.perf_counter() - t0
        result.describe = dict(runtime.describe())
        # Runtimes that compile (torch.compile, TensorRT) report the build time they measured.
        built = (result.describe.get(k) for k in ("compile_s", "engine_build_s"))
        result.compile_s = next((float(s) for s in built if s is not None), None)
    except RuntimeUnavailable as exc:
        close_quietly(runtime)
        memory.free_cached()
        return {"runtime": cls.name, "artifact": artifact.name, "reason": str(exc)}
    except (InputFileError, KeyboardInterrupt):
        close_quietly(runtime)  # a tampered artifact is the user's problem, never a footnote
        raise
    except Exception as exc:  # one failing runtime must not stop the others
        close_quietly(runtime)
        oom = is_oom(exc)
        result.status = OOM if oom else ERROR
        result.error = (
            f"OOM at batch {min(inputs)} (during load/first inference)" if oom else error_line(exc)
        )
        memory.free_cached()
        return _Live(result, None)
    rss1 = current_rss_mb()
    result.host_rss_load_mb = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    result.device_load_mem_mb = memory.growth_mb(mem0)
    result.cells = [CellResult(b) for b in sorted(inputs)]
    return _Live(result, runtime)


def _fail_cell(item: _Live, cell: CellResult, exc: BaseException, memory: DeviceMemory) -> None:
    """Record a failed cell; after an OOM the larger batches of that runtime are skipped."""
    item.prepared.pop(cell.batch_size, None)
    if is_oom(exc):
        cell.status, cell.error = OOM, f"OOM at batch {cell.batch_size}"
        for other in item.result.cells:
            if other.batch_size > cell.batch_size and other.status == OK:
                other.status, other.error = SKIPPED, f"skipped: OOM at batch {cell.batch_size}"
                item.prepared.pop(other.batch_size, None)
                other.samples_ms.clear()
    else:
        cell.status, cell.error = ERROR, error_line(exc)
    cell.samples_ms.clear()
    memory.free_cached()


def _warm_up(
    live: list[_Live],
    cfg: BenchConfig,
    *,
    inputs: dict[int, np.ndarray],
    timer: Timer,
    memory: DeviceMemory,
    progress: Progress,
) -> None:
    total = sum(len(item.result.cells) for item in live)
    done = 0
    for item in live:
        for cell in item.result.cells:
            progress(f"warm-up {item.result.runtime} b{cell.batch_size}", done, total)
            done += 1
            if cell.status != OK:
                continue
            try:
                baseline = memory.reset_peak()  # other runtimes' weights are in the baseline
                prepared = item.runtime.prepare(inputs[cell.batch_size])
                item.prepared[cell.batch_size] = prepared
                cell.first_call_ms = timer.time_ms(item.runtime, prepared)
                for _ in range(cfg.warmup):
                    timer.time_ms(item.runtime, prepared)
                cell.device_peak_mem_mb = runtime_peak_mb(
                    item.result.device_load_mem_mb, memory.peak_over(baseline)
                )
            except InputFileError:
                raise
            except Exception as exc:  # recorded; the other cells go on
                _fail_cell(item, cell, exc, memory)
    progress("warm-up", total, total)


def _timed_rounds(live: list[_Live], cfg: BenchConfig, *, timer: Timer, progress: Progress) -> None:
    """Interleave timed iterations over every cell, round after round, until each is done."""
    active = [(item, cell) for item in live for cell in item.result.cells if cell.status == OK]
    n_cells = max(len(active), 1)

    def done_fraction(cell: CellResult) -> float:
        if cfg.min_time_s is None:
            return min(1.0, len(cell.samples_ms) / cfg.iters)
        by_time = sum(cell.samples_ms) / 1000.0 / cfg.min_time_s
        return min(1.0, by_time, len(cell.samples_ms) / MIN_SAMPLES)

    all_cells = [cell for _, cell in active]
    round_no = 0
    while active:
        for item, cell in rotated(active, round_no):  # no runtime always follows another
            want = cfg.iters_per_round
            if cfg.min_time_s is None:
                want = min(want, cfg.iters - len(cell.samples_ms))
            prepared = item.prepared.get(cell.batch_size)
            try:
                for _ in range(want):
                    cell.samples_ms.append(timer.time_ms(item.runtime, prepared))
            except InputFileError:
                raise
            except Exception as exc:  # recorded; the other cells go on
                _fail_cell(item, cell, exc, DeviceMemory(cfg.device))
        active = [(i, c) for i, c in active if c.status == OK and done_fraction(c) < 1.0]
        round_no += 1
        finished = sum(1.0 if c.status != OK else done_fraction(c) for c in all_cells)
        progress(f"timing (round {round_no})", finished, n_cells)

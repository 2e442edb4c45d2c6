"""The benchmark harness: the only place in tlx that measures time.

How a number is made (the same for every runtime, none of which is known here by name):

1. Every runtime × artifact that can run on the device is loaded; ``load`` plus the first
   inference at the smallest batch is the *cold start*, reported apart from steady state
   (torch.compile / TensorRT build time lands there, or in ``compile_s`` when the runtime
   reports it through ``describe``).
2. Each runtime × batch size ("cell") gets its first call and ``warmup`` untimed iterations.
3. Timed iterations run in *rounds*: each round visits every unfinished cell for
   ``iters_per_round`` iterations, starting one cell later than the previous round, so slow
   drift of a shared machine (thermal, neighbours) hits every runtime alike.
4. One sample = ``run(prepared)`` + ``synchronize()`` on an input already prepared on the
   device: host→device input copies and output copies to host are *not* in the latency.
   CPU: ``time.perf_counter`` read after ``synchronize``. CUDA: CUDA events around the call.
5. Throughput is ``batch_size / p50 latency`` (``throughput_img_s``); the mean-based figure is
   ``throughput_img_s_mean``.

Every runtime sees the same seeded input batches. An out-of-memory error at batch B is
recorded as "OOM at batch B" for that runtime (larger batches are then skipped) and the
others continue; any other failure is recorded in an ``error`` field.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from exporter.bench.report import (
    REGRESSION_RULE,
    compare_reports,
    load_baseline,
    write_bench_reports,
)
from exporter.bench.result import (
    ERROR,
    LATENCY_SCOPE,
    MIN_SAMPLES,
    OK,
    OOM,
    SKIPPED,
    THROUGHPUT_BASIS,
    BenchReport,
    CellResult,
    RuntimeResult,
)
from exporter.core.config import BenchConfig
from exporter.core.errors import (
    EnvironmentUnavailable,
    InputFileError,
    RuntimeUnavailable,
)
from exporter.core.manifest import hash_once
from exporter.core.report import Progress
from exporter.core.resources import bench_need, require
from exporter.core.runlock import locks_run

# --- memory and errors --------------------------------------------------------------------


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


def _error_text(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


class _Timer:
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


# --- planning -----------------------------------------------------------------------------


def _plan(run_dir: Path, cfg: BenchConfig) -> tuple[list[tuple[type, Any]], list[dict[str, Any]]]:
    """(runtime class, artifact) pairs to time and the skipped ones with their reason.

    A runtime the user named that cannot run here is an environment error (exit 3, raised
    by ``select.plan``); with ``all`` it is skipped with the reason. A run without
    ``manifest.json`` (not exported yet) still benches the reference weights.
    """
    from exporter.runtimes.selection import ALL, artifacts_of_run, plan

    artifacts = artifacts_of_run(run_dir, require_manifest=False)
    names = ALL if cfg.all_runtimes else list(dict.fromkeys(cfg.runtimes))
    pairs, skipped = plan(run_dir, names, cfg.device, artifacts=artifacts)
    return list(pairs), [s.to_dict() for s in skipped]


def make_inputs(
    batch_sizes: tuple[int, ...], *, image_size: int, seed: int
) -> dict[int, np.ndarray]:
    """The seeded float32 NCHW batches every runtime is timed on (one per batch size)."""
    rng = np.random.default_rng(seed)
    return {
        b: rng.standard_normal((b, 3, image_size, image_size), dtype=np.float32)
        for b in sorted(batch_sizes)
    }


# --- the harness --------------------------------------------------------------------------


@dataclass
class _Live:
    """A loaded runtime and its per-batch prepared inputs (kept out of the results)."""

    result: RuntimeResult
    runtime: Any
    prepared: dict[int, Any] = field(default_factory=dict)


@locks_run("bench")
@hash_once()
def bench_run(
    run_dir: str | Path,
    cfg: BenchConfig,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Time every planned runtime × batch size of a run and write bench.json/.md/.csv/.png.

    Args:
        run_dir: the run folder (``tlx train`` output; ``tlx export`` adds the artifacts).
        cfg: what to time and how.
        progress: called as work advances (see :data:`Progress`).

    Returns:
        The report; ``report.comparison["passed"]`` is False when ``cfg.compare`` found a
        regression (``report.gate_failures``; the CLI exits 1 on them after writing the reports).

    Raises:
        InputFileError: the run folder, the baseline or an artifact is missing or bad (exit 2).
        RuntimeUnavailable: a named runtime or the device is unavailable here (exit 3).
    """
    import torch

    from exporter.core.envinfo import environment
    from exporter.core.runfolder import open_run

    run_dir = Path(run_dir)
    info = open_run(run_dir)
    baseline = load_baseline(Path(cfg.compare)) if cfg.compare else None  # fail before timing
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise EnvironmentUnavailable(
            "--device cuda: torch.cuda.is_available() is False on this machine; use --device cpu"
        )
    report_progress = progress or (lambda *_: None)
    threads = cfg.threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # runtimes get the same number for their own pools

    pairs, skipped = _plan(run_dir, cfg)
    image_size = info.preprocessing.image_size
    _require_resources(info, cfg, pairs)
    inputs = make_inputs(cfg.batch_sizes, image_size=image_size, seed=cfg.seed)
    timer = _Timer(cfg.device)
    live: list[_Live] = []
    results: list[RuntimeResult] = []
    try:
        for i, (cls, artifact) in enumerate(pairs):
            report_progress(f"loading {cls.name} ({artifact.name})", i, len(pairs))
            item = _load_one(cls, artifact, cfg, threads=threads, inputs=inputs, timer=timer)
            if item is None:
                continue
            if isinstance(item, dict):  # unavailable under --runtimes all
                skipped.append(item)
                continue
            results.append(item.result)
            if item.result.status == OK:
                live.append(item)
        _warm_up(live, cfg, inputs=inputs, timer=timer, progress=report_progress)
        _timed_rounds(live, cfg, timer=timer, progress=report_progress)
    finally:
        for item in live:
            item.prepared.clear()
            _close(item.runtime)
    report = BenchReport(
        run_dir=run_dir,
        config=cfg,
        environment=environment(cfg.device),
        setup={
            "device": cfg.device,
            "precision": cfg.precision,
            "threads": threads,
            "timer": timer.kind,
            "image_size": image_size,
            "input_shapes": {str(b): list(x.shape) for b, x in inputs.items()},
            "input_seed": cfg.seed,
            "latency_scope": LATENCY_SCOPE,
            "throughput_basis": THROUGHPUT_BASIS,
            "interleaving": f"round-robin over runtime x batch, {cfg.iters_per_round} iters/round",
            "regression_rule": REGRESSION_RULE,
        },
        results=results,
        skipped=skipped,
        host_peak_rss_mb=peak_rss_mb(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if baseline is not None:
        report.comparison = compare_reports(
            report.to_dict(), baseline, max_regression_pct=cfg.max_regression_pct
        )
        report.comparison["baseline"] = str(cfg.compare)
    write_bench_reports(report, Path(cfg.out_dir) if cfg.out_dir else run_dir)
    return report


def _require_resources(info: Any, cfg: BenchConfig, pairs: list[tuple[type, Any]]) -> None:
    """Exit 3 before loading anything when memory cannot hold every planned runtime."""
    need = bench_need(
        size=info.preprocessing.image_size,
        batches=tuple(cfg.batch_sizes),
        runtimes=len(pairs),
        arenas=sum(cls.name.startswith("ort") for cls, _ in pairs),
        num_classes=info.num_classes,
        folder=Path(cfg.out_dir) if cfg.out_dir else info.run_dir,
    )
    require(need)


def _load_one(
    cls: type,
    artifact: Any,
    cfg: BenchConfig,
    *,
    threads: int,
    inputs: dict[int, np.ndarray],
    timer: _Timer,
) -> _Live | dict[str, str] | None:
    """Load one runtime and run its first inference (the cold start)."""
    result = RuntimeResult(runtime=cls.name, artifact=artifact.name)
    rss0 = current_rss_mb()
    runtime = None
    try:
        t0 = time.perf_counter()
        runtime = cls(artifact, cfg.device, precision=cfg.precision, threads=threads)
        runtime.load()
        result.load_s = time.perf_counter() - t0
        smallest = min(inputs)
        t0 = time.perf_counter()
        runtime.infer(inputs[smallest])  # host in, host out: what a fresh process pays
        result.first_inference_s = time.perf_counter() - t0
        result.describe = dict(runtime.describe())
        result.compile_s = _reported_compile_s(result.describe)
    except RuntimeUnavailable as exc:
        _close(runtime)
        if not cfg.all_runtimes:
            raise
        return {"runtime": cls.name, "artifact": artifact.name, "reason": str(exc)}
    except (InputFileError, KeyboardInterrupt):
        _close(runtime)  # a tampered artifact is the user's problem, never a footnote
        raise
    except Exception as exc:  # one failing runtime must not stop the others
        _close(runtime)
        result.status = OOM if is_oom(exc) else ERROR
        result.error = (
            f"OOM at batch {min(inputs)} (during load/first inference)"
            if is_oom(exc)
            else _error_text(exc)
        )
        _free_device_memory(cfg.device)
        return _Live(result, None)
    rss1 = current_rss_mb()
    result.host_rss_load_mb = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    result.cells = [CellResult(b) for b in sorted(inputs)]
    return _Live(result, runtime)


def _reported_compile_s(describe: dict[str, Any]) -> float | None:
    # Runtimes that compile (torch.compile, TensorRT) may report the build time they measured.
    for key in ("compile_s", "build_s", "engine_build_s"):
        value = describe.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _close(runtime: Any) -> None:
    if runtime is not None:
        with contextlib.suppress(Exception):  # the original error matters more
            runtime.close()


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _fail_cell(item: _Live, cell: CellResult, exc: BaseException, device: str) -> None:
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
        cell.status, cell.error = ERROR, _error_text(exc)
    cell.samples_ms.clear()
    _free_device_memory(device)


def _warm_up(
    live: list[_Live],
    cfg: BenchConfig,
    *,
    inputs: dict[int, np.ndarray],
    timer: _Timer,
    progress: Progress,
) -> None:
    cuda = cfg.device.startswith("cuda")
    total = sum(len(item.result.cells) for item in live)
    done = 0
    for item in live:
        for cell in item.result.cells:
            progress(f"warm-up {item.result.runtime} b{cell.batch_size}", done, total)
            done += 1
            if cell.status != OK:
                continue
            try:
                if cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                prepared = item.runtime.prepare(inputs[cell.batch_size])
                item.prepared[cell.batch_size] = prepared
                cell.first_call_ms = timer.time_ms(item.runtime, prepared)
                for _ in range(cfg.warmup):
                    timer.time_ms(item.runtime, prepared)
                if cuda:
                    cell.device_peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20
            except InputFileError:
                raise
            except Exception as exc:  # recorded; the other cells go on
                _fail_cell(item, cell, exc, cfg.device)
    progress("warm-up", total, total)


def _timed_rounds(
    live: list[_Live], cfg: BenchConfig, *, timer: _Timer, progress: Progress
) -> None:
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
        shift = round_no % len(active)  # rotate who goes first: no runtime always follows another
        for item, cell in active[shift:] + active[:shift]:
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
                _fail_cell(item, cell, exc, cfg.device)
        active = [(i, c) for i, c in active if c.status == OK and done_fraction(c) < 1.0]
        round_no += 1
        finished = sum(1.0 if c.status != OK else done_fraction(c) for c in all_cells)
        progress(f"timing (round {round_no})", finished, n_cells)
    for item in live:
        item.prepared.clear()

"""``tlx bench``: plan, measure (``harness.py`` with ``measure.py``: the only timer), report.

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
others continue; any other failure is recorded in an ``error`` field. A runtime that cannot
load here (a provider ONNX Runtime lists but cannot load, such as TensorRT without
libnvinfer) is listed under ``skipped`` with the reason and the others are still timed;
only when nothing at all could load is it an environment error (exit 3).

On CUDA, fp32 math is IEEE fp32 unless ``cfg.tf32`` allows TF32 (torch's flags are set for
the run and restored after; ORT-CUDA gets ``use_tf32``); the flags are in ``setup``. Device
memory is measured per runtime (see :func:`exporter.bench.measure.runtime_peak_mb`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from exporter.bench.harness import measure
from exporter.bench.measure import Timer, peak_rss_mb
from exporter.bench.op_profile import profile_pairs
from exporter.bench.report import (
    REGRESSION_RULE,
    compare_reports,
    load_baseline,
    write_bench_reports,
)
from exporter.bench.result import LATENCY_SCOPE, THROUGHPUT_BASIS, BenchReport
from exporter.core.config import BenchConfig
from exporter.core.envinfo import environment
from exporter.core.errors import EnvironmentUnavailable
from exporter.core.machine import usable_cpus
from exporter.core.report import Progress
from exporter.core.resources import require
from exporter.core.runfolder import Run, open_run
from exporter.core.runlock import locks_run
from exporter.model.footprint import bench_need
from exporter.runtimes.cuda_math import tf32_mode
from exporter.runtimes.selection import artifacts_of_run, parse_runtimes, plan

__all__ = ["bench_run", "make_inputs"]


def make_inputs(
    batch_sizes: tuple[int, ...], *, image_size: int, seed: int
) -> dict[int, np.ndarray]:
    """The seeded float32 NCHW batches every runtime is timed on (one per batch size)."""
    rng = np.random.default_rng(seed)
    return {
        b: rng.standard_normal((b, 3, image_size, image_size), dtype=np.float32)
        for b in sorted(batch_sizes)
    }


@locks_run("bench")
def bench_run(
    run_dir: Run | str | Path,
    cfg: BenchConfig,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Time every planned runtime × batch size of a run and write bench.json/.md/.csv/.png.

    The opened run is passed down, so each file is hashed once per bench.

    Returns:
        The report; ``report.comparison["passed"]`` is False when ``cfg.compare`` found a
        regression (``report.gate_failures``; the CLI exits 1 on them after writing the reports).

    Raises:
        InputFileError: the run folder, the baseline or an artifact is missing or bad (exit 2).
        RuntimeUnavailable: a named runtime or the device is unavailable here (exit 3).
    """
    import torch

    names = parse_runtimes(cfg.runtimes)  # an unknown name is exit 2 before any file is read
    info = open_run(run_dir)
    run_dir = info.run_dir
    baseline = load_baseline(Path(cfg.compare)) if cfg.compare else None  # fail before timing
    cuda = cfg.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise EnvironmentUnavailable(
            "--device cuda: torch.cuda.is_available() is False on this machine; use --device cpu"
        )
    threads = cfg.threads or usable_cpus()  # the cores this process may use
    torch.set_num_threads(threads)  # runtimes get the same number for their own pools
    # A runtime the user named that cannot run here is an environment error (exit 3, raised
    # by plan); with ``all`` it is skipped with the reason. A run without manifest.json (not
    # exported yet) still benches the reference weights.
    artifacts = artifacts_of_run(info, require_manifest=False)
    the_plan = plan(info, names, cfg.device, artifacts=artifacts)
    pairs, skipped = the_plan.pairs, [s.to_dict() for s in the_plan.skipped]
    _require_resources(info, cfg, pairs)
    inputs = make_inputs(cfg.batch_sizes, image_size=info.preprocessing.image_size, seed=cfg.seed)
    # torch's TF32 flags are process-global: set for this run only, restored after.
    with tf32_mode(cfg.tf32) if cuda else contextlib.nullcontext() as flags:
        results = measure(
            pairs, cfg, threads=threads, inputs=inputs, skipped=skipped, progress=progress
        )
    profile = None
    if cfg.profile:  # after timing: a profiling session never shares the timed rounds
        report_progress = progress or (lambda *_: None)
        report_progress("profiling operators", 0, 1)
        x = inputs[min(inputs)]
        profile = profile_pairs(
            pairs, device=cfg.device, threads=threads, x=x, runs=cfg.profile_runs
        )
    report = BenchReport(
        run_dir=run_dir,
        config=cfg,
        environment=environment(cfg.device),
        setup=_setup(cfg, threads=threads, inputs=inputs, tf32_flags=flags),
        results=results,
        skipped=skipped,
        host_peak_rss_mb=peak_rss_mb(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        profile=profile,
    )
    if baseline is not None:
        report.comparison = compare_reports(
            report.to_dict(), baseline, max_regression_pct=cfg.max_regression_pct
        )
        report.comparison["baseline"] = str(cfg.compare)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir
    write_bench_reports(report, out_dir)
    if out_dir.resolve() == run_dir.resolve():
        from exporter.sign.card import write_model_card

        write_model_card(info)  # the card quotes bench.json: refresh it with each run's bench
    return report


def _require_resources(info: Run, cfg: BenchConfig, pairs: list[tuple[type, Any]]) -> None:
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


def _setup(
    cfg: BenchConfig,
    *,
    threads: int,
    inputs: dict[int, np.ndarray],
    tf32_flags: dict[str, Any] | None,
) -> dict[str, Any]:
    """How the numbers were taken (bench.json ``setup``)."""
    image_size = next(iter(inputs.values())).shape[-1]
    return {
        "device": cfg.device,
        "precision": cfg.precision,
        # fp32 on CUDA: TF32 allowed or not (None on CPU, where it does not exist).
        "tf32": cfg.tf32 if cfg.device.startswith("cuda") else None,
        "tf32_flags": tf32_flags,
        "threads": threads,
        "timer": Timer(cfg.device).kind,
        "image_size": int(image_size),
        "input_shapes": {str(b): list(x.shape) for b, x in inputs.items()},
        "input_seed": cfg.seed,
        "latency_scope": LATENCY_SCOPE,
        "throughput_basis": THROUGHPUT_BASIS,
        "interleaving": f"round-robin over runtime x batch, {cfg.iters_per_round} iters/round",
        "device_memory": "per runtime: its load growth + its peak over the cell's baseline",
        "regression_rule": REGRESSION_RULE,
    }

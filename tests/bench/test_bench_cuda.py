"""tlx bench on a CUDA device (``pytest -m gpu``): per-runtime device memory, TF32 labels
and flags restored."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.bench.bench import bench_run
from exporter.core.config import BenchConfig
from exporter.runtimes.cuda_math import tf32_flags

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_bench_memory_and_precision_label(
    shared_run_folder: Path, tmp_path: Path, tf32: bool
) -> None:
    before = tf32_flags()
    cfg = BenchConfig(
        runtimes=("eager",),
        device="cuda",
        batch_sizes=(1, 4),
        warmup=1,
        iters=3,
        tf32=tf32,
        out_dir=str(tmp_path),
    )
    report = bench_run(shared_run_folder, cfg)
    assert tf32_flags() == before  # the process-wide flags come back
    assert report.setup["tf32"] is tf32 and report.setup["timer"] == "cuda_event"
    result = report.results[0]
    assert result.device_load_mem_mb and result.device_load_mem_mb > 100  # VGG16's weights
    peaks = [c.device_peak_mem_mb for c in result.cells]
    assert all(p is not None and p >= result.device_load_mem_mb for p in peaks)
    assert {r["precision"] for r in report.rows()} == {"tf32" if tf32 else "fp32"}

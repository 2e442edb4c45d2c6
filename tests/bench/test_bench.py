"""The bench harness on a tiny fake runtime and on eager at 32 px. No timing is asserted."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from exporter.bench.bench import bench_run, make_inputs
from exporter.bench.measure import is_oom
from exporter.bench.report import (
    BENCH_CSV,
    BENCH_JSON,
    BENCH_MD,
    BENCH_PNG,
    compare_reports,
    load_baseline,
)
from exporter.bench.result import BenchReport, latency_stats
from exporter.cli import app
from exporter.core.config import BenchConfig
from exporter.core.errors import (
    EXIT_ENV,
    EXIT_GATE,
    EXIT_USAGE,
    InputFileError,
    RuntimeUnavailable,
    UsageError,
)
from exporter.runtimes import REGISTRY, load_all
from exporter.runtimes.base import Runtime


class FakeRuntime(Runtime):
    """Sleeps instead of computing; can fail or run out of memory on demand."""

    name: ClassVar[str] = "fake"
    formats: ClassVar[tuple[str, ...]] = ("safetensors",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    delay_s: ClassVar[float] = 0.001
    oom_at: ClassVar[int | None] = None
    oom_exc: ClassVar[type[BaseException]] = MemoryError
    load_exc: ClassVar[BaseException | None] = None
    why_unavailable: ClassVar[str | None] = None

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        return cls.why_unavailable

    def load(self) -> None:
        if self.load_exc is not None:
            raise self.load_exc
        self.loaded = True

    def prepare(self, x: np.ndarray) -> Any:
        return x

    def run(self, prepared: Any) -> Any:
        if self.oom_at is not None and prepared.shape[0] >= self.oom_at:
            raise self.oom_exc("CUDA out of memory. Tried to allocate 2.00 GiB")
        time.sleep(self.delay_s)
        return np.zeros((prepared.shape[0], self.artifact.num_classes), np.float32)

    def to_numpy(self, output: Any) -> np.ndarray:
        return output

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "compile_s": 0.25}


def fake(name: str, **attrs: Any) -> type[Runtime]:
    return type(f"Fake_{name}", (FakeRuntime,), {"name": name, **attrs})


@pytest.fixture
def registry() -> Iterator[dict[str, type[Runtime]]]:
    """Only the runtimes a test puts in (eager kept at hand); the real registry is restored."""
    load_all()
    saved = dict(REGISTRY)
    REGISTRY.clear()
    try:
        yield REGISTRY
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


@pytest.fixture
def run_folder(tmp_path: Path, shared_run_folder: Path) -> Path:
    """A run folder for the fake runtimes: a real train.json, weights never read (fast)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(shared_run_folder / "train.json", run / "train.json")
    (run / "model.safetensors").write_bytes(b"fake runtimes do not read the weights")
    return run


def small_cfg(**kw: Any) -> BenchConfig:
    base = dict(batch_sizes=(1, 2), warmup=1, iters=4, iters_per_round=2, threads=2)
    base.update(kw)
    return BenchConfig(**base)


# --- statistics ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.floats(0.01, 1e4, allow_nan=False), min_size=1, max_size=200),
    batch=st.integers(1, 512),
)
def test_percentiles_ordered_and_throughput_is_batch_over_p50(
    samples: list[float], batch: int
) -> None:
    s = latency_stats(samples, batch_size=batch)
    assert s["iters"] == len(samples)
    assert s["latency_ms_min"] <= s["latency_ms_p50"] <= s["latency_ms_p90"]
    assert s["latency_ms_p90"] <= s["latency_ms_p95"] <= s["latency_ms_p99"] <= s["latency_ms_max"]
    assert s["throughput_img_s"] == pytest.approx(batch * 1000.0 / s["latency_ms_p50"])
    assert s["throughput_img_s_mean"] == pytest.approx(batch * 1000.0 / s["latency_ms_mean"])
    assert s["latency_ms_iqr"] >= 0


def test_stats_of_no_samples_are_none() -> None:
    s = latency_stats([], batch_size=4)
    assert s["iters"] == 0 and s["latency_ms_p50"] is None and s["throughput_img_s"] is None


def test_inputs_are_seeded_and_shared() -> None:
    a = make_inputs((1, 4), image_size=8, seed=3)
    b = make_inputs((4, 1), image_size=8, seed=3)
    assert a[4].shape == (4, 3, 8, 8) and a[4].dtype == np.float32
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[4], b[4])


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), True),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("[ONNXRuntimeError] Failed to allocate memory for requested buffer"), True),
        (RuntimeError("shape mismatch"), False),
    ],
)
def test_is_oom(exc: BaseException, expected: bool) -> None:
    assert is_oom(exc) is expected


def test_config_rejects_bad_values() -> None:
    with pytest.raises(UsageError, match="--batch-sizes"):
        BenchConfig(batch_sizes=(0,))
    with pytest.raises(UsageError, match="--iters"):
        BenchConfig(iters=1)
    with pytest.raises(UsageError, match="--device"):
        BenchConfig(device="tpu")
    with pytest.raises(UsageError, match="--min-time"):
        BenchConfig(min_time_s=0)


# --- the harness: eager (real VGG16 at 32 px) and a fake, interleaved -------------------------


@pytest.fixture(scope="module")
def eager_report(module_tmp: Path, shared_run_folder: Path) -> BenchReport:
    load_all()
    saved = dict(REGISTRY)
    REGISTRY.clear()
    REGISTRY.update({"eager": saved["eager"], "fake": fake("fake")})
    try:
        out = module_tmp / "bench-out"
        return bench_run(shared_run_folder, small_cfg(out_dir=str(out)))
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


def test_every_runtime_and_batch_measured(eager_report: BenchReport) -> None:
    rows = eager_report.rows()
    assert {(r["runtime"], r["batch_size"]) for r in rows} == {
        (rt, b) for rt in ("eager", "fake") for b in (1, 2)
    }
    for row in rows:
        assert row["status"] == "ok", row
        assert row["iters"] == 4
        assert row["latency_ms_p50"] <= row["latency_ms_p90"] <= row["latency_ms_p95"]
        assert row["latency_ms_p95"] <= row["latency_ms_p99"]
        assert row["throughput_img_s"] == pytest.approx(
            row["batch_size"] * 1000.0 / row["latency_ms_p50"]
        )
        assert row["first_call_ms"] is not None


def test_cold_start_reported_apart_from_steady_state(eager_report: BenchReport) -> None:
    for r in eager_report.results:
        assert r.load_s is not None and r.first_inference_s is not None
        assert r.cold_start_s == pytest.approx(r.load_s + r.first_inference_s)
    by_name = {r.runtime: r for r in eager_report.results}
    assert by_name["fake"].compile_s == 0.25  # what the runtime reported, kept apart
    assert by_name["eager"].compile_s is None
    assert by_name["eager"].host_rss_load_mb is not None


def test_speedup_relative_to_reference(eager_report: BenchReport) -> None:
    for row in eager_report.rows():
        if row["runtime"] == "eager":
            assert row["speedup_vs_eager"] == pytest.approx(1.0)
        else:
            ref = next(
                r
                for r in eager_report.rows()
                if r["runtime"] == "eager" and r["batch_size"] == row["batch_size"]
            )
            assert row["speedup_vs_eager"] == pytest.approx(
                ref["latency_ms_p50"] / row["latency_ms_p50"]
            )


def test_reports_written_and_readable(eager_report: BenchReport) -> None:
    files = {name: Path(p) for name, p in eager_report.files.items()}
    assert set(files) == {BENCH_JSON, BENCH_MD, BENCH_CSV, BENCH_PNG}
    data = json.loads(files[BENCH_JSON].read_text())
    assert data["schema_version"] == 1 and data["command"] == "bench"
    assert data["config"]["batch_sizes"] == [1, 2]
    assert data["setup"]["threads"] == 2 and data["setup"]["timer"] == "perf_counter"
    assert data["environment"]["torch"] == torch.__version__
    # The machine block: instruction-set names and the cores this process may use.
    assert isinstance(data["machine"]["isa"], list)
    assert all(isinstance(n, str) and n == n.lower() for n in data["machine"]["isa"])
    assert isinstance(data["machine"]["cpus_available"], int)
    assert 1 <= data["machine"]["cpus_available"] <= (os.cpu_count() or 1)
    assert len(data["rows"]) == 4
    assert all("latency_ms_p50" in r and "throughput_img_s" in r for r in data["rows"])
    with files[BENCH_CSV].open() as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == 4
    assert float(csv_rows[0]["latency_ms_p50"]) == pytest.approx(data["rows"][0]["latency_ms_p50"])
    md = files[BENCH_MD].read_text()
    assert "| runtime |" in md and "x eager" in md and "fake" in md
    assert "- machine: " in md and "instruction set" in md
    for name in data["machine"]["isa"]:
        assert name.upper() in md
    import matplotlib.image

    img = matplotlib.image.imread(files[BENCH_PNG])
    assert img.ndim == 3 and img.shape[0] > 100


# --- skips, failures, OOM -----------------------------------------------------------------


def test_unavailable_runtime_skipped_with_reason_under_all(
    registry: dict, run_folder: Path
) -> None:
    registry.update(
        {
            "fake": fake("fake"),
            "no-gpu": fake("no-gpu", why_unavailable="needs the moon"),
            "broken-provider": fake("broken-provider", load_exc=RuntimeUnavailable("fell back")),
        }
    )
    report = bench_run(run_folder, small_cfg(batch_sizes=(1,)))
    skipped = {s["runtime"]: s["reason"] for s in report.skipped}
    assert skipped == {"no-gpu": "needs the moon", "broken-provider": "fell back"}
    assert [r.runtime for r in report.results] == ["fake"]
    assert "needs the moon" in (run_folder / BENCH_MD).read_text()


@pytest.mark.parametrize("name", ["no-gpu", "broken-provider"])
def test_named_unavailable_runtime_is_an_environment_error(
    registry: dict, run_folder: Path, name: str
) -> None:
    registry.update(
        {
            "no-gpu": fake("no-gpu", why_unavailable="needs the moon"),
            "broken-provider": fake("broken-provider", load_exc=RuntimeUnavailable("fell back")),
        }
    )
    with pytest.raises(RuntimeUnavailable):
        bench_run(run_folder, small_cfg(runtimes=(name,)))
    result = CliRunner().invoke(app, ["bench", str(run_folder), "--runtimes", name, "-q"])
    assert result.exit_code == EXIT_ENV, result.output


def test_failing_runtime_gets_error_and_others_continue(registry: dict, run_folder: Path) -> None:
    registry.update(
        {"fake": fake("fake"), "crashy": fake("crashy", load_exc=ValueError("bad graph"))}
    )
    report = bench_run(run_folder, small_cfg())
    by_name = {r.runtime: r for r in report.results}
    assert by_name["crashy"].status == "error"
    assert by_name["crashy"].error == "ValueError: bad graph"
    assert all(c.status == "ok" for c in by_name["fake"].cells)
    crashy_rows = [r for r in report.rows() if r["runtime"] == "crashy"]
    assert crashy_rows and crashy_rows[0]["error"] == "ValueError: bad graph"


@pytest.mark.parametrize("exc", [MemoryError, torch.cuda.OutOfMemoryError])
def test_oom_at_batch_recorded_and_others_continue(
    registry: dict, run_folder: Path, exc: type[BaseException]
) -> None:
    registry.update({"fake": fake("fake"), "hungry": fake("hungry", oom_at=4, oom_exc=exc)})
    report = bench_run(run_folder, small_cfg(batch_sizes=(1, 4, 8)))
    hungry = {
        c.batch_size: c for c in next(r for r in report.results if r.runtime == "hungry").cells
    }
    assert hungry[1].status == "ok" and hungry[1].samples_ms
    assert (hungry[4].status, hungry[4].error) == ("oom", "OOM at batch 4")
    assert hungry[8].status == "skipped" and "OOM at batch 4" in hungry[8].error
    fake_cells = next(r for r in report.results if r.runtime == "fake").cells
    assert [c.status for c in fake_cells] == ["ok", "ok", "ok"]
    assert "OOM at batch 4" in (run_folder / BENCH_CSV).read_text()


def test_min_time_mode_collects_enough_samples(registry: dict, run_folder: Path) -> None:
    registry.update({"fake": fake("fake")})
    report = bench_run(run_folder, small_cfg(batch_sizes=(1,), min_time_s=0.02))
    cell = report.results[0].cells[0]
    assert len(cell.samples_ms) >= 5
    assert sum(cell.samples_ms) >= 20.0


# --- regression gate ----------------------------------------------------------------------


def _scaled(report_json: dict, factor: float) -> dict:
    out = json.loads(json.dumps(report_json))
    for row in out["rows"]:
        for key in list(row):
            if key.startswith("latency_ms_") and row[key] is not None:
                row[key] *= factor
    return out


def test_compare_flags_a_planted_2x_regression_only() -> None:
    current = {"setup": {}, "rows": [_row("a", 1, 10.0, 10.5), _row("b", 1, 4.0, 4.2)]}
    same = compare_reports(current, current, max_regression_pct=10)
    assert same["passed"] and not any(c["regressed"] for c in same["cells"])
    faster_baseline = _scaled(current, 0.5)  # the same run twice as fast: we got 2x slower
    comp = compare_reports(current, faster_baseline, max_regression_pct=10)
    assert not comp["passed"]
    assert all(c["regressed"] for c in comp["cells"])
    assert comp["cells"][0]["change_pct"] == pytest.approx(100.0)
    noisy = {"setup": {}, "rows": [_row("a", 1, 10.0, 30.0)]}  # spread wider than the change
    assert compare_reports(noisy, _scaled(noisy, 0.5), max_regression_pct=10)["passed"]


def _row(rt: str, b: int, p50: float, p90: float) -> dict:
    return {
        "runtime": rt,
        "artifact": "model.safetensors",
        "batch_size": b,
        "latency_ms_p50": p50,
        "latency_ms_p90": p90,
    }


def test_cli_compare_exits_1_on_regression_and_0_on_rerun(
    registry: dict, run_folder: Path, tmp_path: Path
) -> None:
    registry.update({"fake": fake("fake", delay_s=0.002)})
    runner = CliRunner()
    args = ["bench", str(run_folder), "--batch-sizes", "1,2", "--iters", "6", "--warmup", "1"]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    baseline = json.loads((tmp_path / "a" / BENCH_JSON).read_text())
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(_scaled(baseline, 0.5)))
    gated = runner.invoke(app, [*args, "--compare", str(fast), "--max-regression", "20", "-q"])
    assert gated.exit_code == EXIT_GATE, gated.output
    assert "regression" in gated.output
    assert not json.loads((run_folder / BENCH_JSON).read_text())["comparison"]["passed"]
    # The planted regression removed: the same numbers as baseline pass.
    same = tmp_path / "same.json"
    same.write_text(json.dumps(json.loads((run_folder / BENCH_JSON).read_text())))
    current = json.loads((run_folder / BENCH_JSON).read_text())
    assert compare_reports(current, load_baseline(same), max_regression_pct=20)["passed"]


def test_cli_usage_errors(run_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", str(run_folder), "--batch-sizes", "1,x"])
    assert bad.exit_code == EXIT_USAGE and "--batch-sizes" in bad.output
    missing = runner.invoke(app, ["bench", str(run_folder), "--compare", str(tmp_path / "no")])
    assert missing.exit_code == EXIT_USAGE and "--compare" in missing.output
    not_run = runner.invoke(app, ["bench", str(tmp_path / "nowhere")])
    assert not_run.exit_code == EXIT_USAGE
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    with pytest.raises(InputFileError, match=r"not a bench\.json"):
        load_baseline(junk)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_without_cuda_exits_3(run_folder: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(run_folder), "--device", "cuda"])
    assert result.exit_code == EXIT_ENV
    assert "--device cpu" in result.output


def test_suite_markdown_combines_reports(
    eager_report: BenchReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.suite import suite_markdown, suite_rows  # the suites' script helper

    path = Path(eager_report.files[BENCH_JSON])
    rows = suite_rows([path, path])
    assert len(rows) == 8 and {r["label"] for r in rows} == {path.parent.name}
    md = suite_markdown([path], title="CPU suite", command="benchmarks/cpu_suite.sh")
    assert md.startswith("### CPU suite: ")
    assert "`benchmarks/cpu_suite.sh`" in md and "| grid | px |" in md
    assert md.count("| 1.00x |") == 2  # eager against itself at both batch sizes


def test_named_runtime_that_cannot_load_is_skipped_and_the_others_are_timed(
    registry: dict, run_folder: Path
) -> None:
    # ORT lists TensorRT without libnvinfer: its load failure must not sink eager's numbers.
    registry.update(
        {
            "fake": fake("fake"),
            "broken-provider": fake("broken-provider", load_exc=RuntimeUnavailable("no nvinfer")),
        }
    )
    report = bench_run(run_folder, small_cfg(runtimes=("fake", "broken-provider")))
    assert [r.runtime for r in report.results] == ["fake"]
    assert all(c.status == "ok" and c.samples_ms for c in report.results[0].cells)
    assert report.skipped == [
        {"runtime": "broken-provider", "artifact": "model.safetensors", "reason": "no nvinfer"}
    ]
    saved = json.loads((run_folder / BENCH_JSON).read_text())
    assert saved["skipped"][0]["reason"] == "no nvinfer"


def test_precision_label_says_what_ran(registry: dict, run_folder: Path) -> None:
    # The fake runtime does not autocast: bf16 asked of an fp32 artifact runs fp32.
    registry.update({"fake": fake("fake")})
    report = bench_run(run_folder, small_cfg(batch_sizes=(1,), precision="bf16"))
    row = report.rows()[0]
    assert row["precision"] == "fp32"
    assert report.results[0].describe["precision_requested"] == "bf16"
    assert report.setup["tf32"] is None and report.setup["tf32_flags"] is None  # CPU


def test_runtime_peak_memory_counts_its_own_weights_only() -> None:
    from exporter.bench.measure import DeviceMemory, runtime_peak_mb

    # 500 MiB of weights loaded by this runtime + 120 MiB of activations over the baseline
    # (the baseline holds every other runtime's weights and is not counted).
    assert runtime_peak_mb(500.0, 120.0) == 620.0
    assert runtime_peak_mb(None, 120.0) == 120.0
    assert runtime_peak_mb(500.0, None) is None
    cpu = DeviceMemory("cpu")
    assert cpu.used_mb() is None and cpu.peak_over(cpu.reset_peak()) is None


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA degradation")
def test_gpu_suite_degrades_to_the_cpu_subset(tmp_path: Path) -> None:
    """benchmarks/gpu_suite.sh without CUDA: says so, runs the CPU subset, writes $OUT."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "ITERS_CPU": "2"}
    proc = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_suite.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,  # the device call's bar; the script's own deadline is 510 s
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NO CUDA" in proc.stderr and "NO CUDA" in proc.stdout
    # What comes back from the device call: one archive and <= 8 files, <= 2 folders deep.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {
        "gpu_suite.tar.gz",
        "summary.md",
        "summary.csv",
        "steps.tsv",
    }
    assert all(len(p.relative_to(tmp_path).parts) <= 3 for p in files)
    steps = (tmp_path / "steps.tsv").read_text()
    assert "pytest -m gpu\tskipped: no CUDA" in steps
    assert "bench cpu-32px-fp32\tok" in steps
    with tarfile.open(tmp_path / "gpu_suite.tar.gz") as tar:
        member = tar.extractfile("gpu_suite/cpu-32px-fp32/bench.json")
        assert member is not None
        report = json.loads(member.read())
    assert {r["runtime"] for r in report["rows"]} == {"eager", "ort-cpu"}
    assert proc.stdout.strip().splitlines()[-1].startswith("full results:")

"""The openvino runtime's own promises: f32 precision, the hint per batch size, the static-batch
cache, and a clear exit 3 when the package is missing (parity itself: test_runtimes.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_ENV, RuntimeUnavailable
from exporter.runtimes import REGISTRY, load_all
from exporter.runtimes.openvino_cpu import THROUGHPUT_MIN_BATCH
from exporter.runtimes.selection import artifacts_of_run, plan

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def onnx_artifact(exported_run: Path):
    return next(a for a in artifacts_of_run(exported_run) if a.name == "model.onnx")


@pytest.fixture(scope="module")
def reference(exported_run: Path):
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model

    return load_reference_model(open_run(exported_run))


def _want(reference, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return reference(torch.from_numpy(x)).numpy()


def test_hints_precision_threads_and_compiled_models(onnx_artifact, reference) -> None:
    rt = load_all()["openvino"](onnx_artifact, "cpu", threads=2)
    rt.load()
    try:
        rng = np.random.default_rng(3)
        for b in (1, 2, 3, THROUGHPUT_MIN_BATCH):
            x = rng.standard_normal((b, 3, 32, 32), dtype=np.float32)
            got = rt.infer(x)
            assert got.shape == (b, 10) and got.dtype == np.float32
            np.testing.assert_allclose(got, _want(reference, x), atol=1e-4, rtol=1e-3)
        # Batch 1 got a static model, 2 and 3 share the dynamic one: three weight copies at most.
        assert set(rt._latency) == {1, None}
        info = rt.describe()["openvino"]
        assert set(info["compiled"]) == {"LATENCY batch 1", "LATENCY", "THROUGHPUT"}
        for compiled in info["compiled"].values():
            assert compiled["INFERENCE_PRECISION_HINT"] == "f32"  # never bf16 behind our back
            assert compiled["INFERENCE_NUM_THREADS"] == "2"
    finally:
        rt.close()


def test_output_is_a_copy_not_the_requests_buffer(onnx_artifact) -> None:
    rt = REGISTRY["openvino"](onnx_artifact, "cpu")
    rt.load()
    try:
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
        first = rt.infer(x)
        kept = first.copy()
        rt.infer(-x)
        np.testing.assert_array_equal(first, kept)
    finally:
        rt.close()


@pytest.fixture
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "openvino" else real_find_spec(name, *a, **k),
    )
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError


def test_missing_package_is_unavailable_with_the_install_hint(
    no_openvino: None, onnx_artifact, exported_run: Path
) -> None:
    cls = REGISTRY["openvino"]
    assert "pip install 'openvino" in (cls.unavailable_reason("cpu") or "")
    with pytest.raises(RuntimeUnavailable, match="pip install 'openvino"):
        cls(onnx_artifact, "cpu").load()
    skipped = plan(exported_run, "all", "cpu").skipped
    assert any(s.runtime == "openvino" and "openvino" in s.reason for s in skipped)
    with pytest.raises(RuntimeUnavailable, match="--runtimes openvino"):
        plan(exported_run, ["openvino"], "cpu")


def test_missing_package_named_on_the_cli_is_exit_3(no_openvino: None, exported_run: Path) -> None:
    result = CliRunner().invoke(app, ["bench", str(exported_run), "--runtimes", "openvino"])
    assert result.exit_code == EXIT_ENV, result.output
    assert "openvino" in result.output and "Traceback" not in result.output

"""int8 quantization with ORT's tooling and the gate that decides whether a variant ships.

The quantizer is exercised on a tiny conv net exported the same way as VGG16 (dynamo, dynamic
batch), so these tests run in seconds; the VGG16 runs are in test_optimize.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from exporter.core.errors import InputFileError, UsageError
from exporter.optimize.build import save_onnx
from exporter.optimize.quantize import (
    prepare_for_quantization,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from exporter.runtimes.ort_sessions import cpu_logits
from exporter.verify.tolerance import profile_for
from exporter.verify.verdict import Heldout, Judgement, judge


def _judge(
    ref: np.ndarray,
    cand: np.ndarray,
    labels: np.ndarray,
    *,
    precision: str = "int8",
    min_top1_agreement: float | None = None,
    max_accuracy_drop_points: float | None = None,
) -> Judgement:
    """The one judge as optimize calls it: the profile, the held-out images' labels."""
    profile = profile_for(
        precision, min_top1=min_top1_agreement, max_accuracy_drop_points=max_accuracy_drop_points
    )
    return judge(ref, cand, profile, heldout=Heldout(ref, cand, labels))


SIZE = 16


class TinyNet(nn.Module):
    """conv → relu → pool → flatten → linear → relu → linear head (VGG16's shape, in small)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(8 * (SIZE // 2) ** 2, 32), nn.ReLU(), nn.Linear(32, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = TinyNet().eval()
    path = tmp_path_factory.mktemp("q") / "tiny.onnx"
    save_onnx(model, path, image_size=SIZE)
    return path, model


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_prepare_clears_the_exporters_batch_shapes(tiny: tuple[Path, nn.Module], tmp_path: Path):
    src, _ = tiny
    assert len(onnx.load(str(src)).graph.value_info) > 0  # what trips ORT's quantizer
    dest = tmp_path / "pre.onnx"
    prepare_for_quantization(src, dest)
    graph = onnx.load(str(dest)).graph
    # Whatever shapes are re-inferred keep the batch symbolic, never the example's 2.
    for vi in graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        assert not dims or dims[0].dim_value != 2, vi.name


def test_static_int8_is_qdq_per_channel_with_an_fp32_head(
    tiny: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    src, model = tiny
    dest = tmp_path / "int8.onnx"
    # 64 calibration images: with 16, the activation ranges of this toy net's noise inputs
    # sit at the edge of the 10% bound below (0.110 of max |logit| measured, 0.083 with 64).
    settings = quantize_static_int8(src, dest, calibration_images=_images(64, 1))
    assert settings["format"] == "QDQ" and settings["per_channel"] is True
    assert settings["calibration_images"] == 64 and len(settings["fp32_nodes"]) == 1
    model_q = onnx.load(str(dest))
    ops = [n.op_type for n in model_q.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    inits = {i.name: i for i in model_q.graph.initializer}
    int8_weights = [i for i in inits.values() if i.data_type == onnx.TensorProto.INT8]
    uint8_zero_points = [i for i in inits.values() if i.data_type == onnx.TensorProto.UINT8]
    assert int8_weights and uint8_zero_points  # int8 weights, uint8 activations
    # Per-channel: a weight's scale has one value per output channel (8 for the conv).
    scales = [list(i.dims) for n, i in inits.items() if "scale" in n and i.dims]
    assert [8] in scales
    # The head's weight stayed float: a 32×4 (or 4×32) float initialiser remains.
    float_w = [i for i in inits.values() if i.data_type == onnx.TensorProto.FLOAT]
    assert any(sorted(i.dims) == [4, 32] for i in float_w)

    x = _images(64, 2)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = cpu_logits(dest, x, batch=32)
    gate = _judge(ref, got, ref.argmax(1), min_top1_agreement=0.9)
    assert gate.max_abs_logit_diff < 0.1 * np.abs(ref).max()
    assert gate.top1_agreement >= 0.9


def test_dynamic_int8_quantizes_the_matmuls(tiny: tuple[Path, nn.Module], tmp_path: Path) -> None:
    src, _ = tiny
    dest = tmp_path / "dyn.onnx"
    settings = quantize_dynamic_int8(src, dest)
    assert settings["method"] == "dynamic"
    ops = _ops(dest)
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    assert "Conv" in ops  # the trunk stays fp32: weights-only for the classifier


def test_static_int8_refuses_empty_calibration(tiny: tuple[Path, nn.Module], tmp_path: Path):
    src, _ = tiny
    with pytest.raises(UsageError, match="calibration images"):
        quantize_static_int8(src, tmp_path / "x.onnx", calibration_images=np.zeros((0, 3)))


def test_prepare_refuses_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputFileError, match="cannot read ONNX model"):
        prepare_for_quantization(bad, tmp_path / "out.onnx")


# --- the gate ---------------------------------------------------------------------------


def _logits(n: int = 200, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n, classes)).astype(np.float32)
    ref[np.arange(n), rng.integers(0, classes, n)] += 3.0  # clear winners: no near-ties
    labels = ref.argmax(1)
    labels[: n // 5] = (labels[: n // 5] + 1) % classes  # 80% accurate reference
    return ref, labels


def test_gate_passes_small_int8_noise() -> None:
    ref, y = _logits()
    cand = ref + np.random.default_rng(1).normal(0, 0.01, ref.shape).astype(np.float32)
    g = _judge(ref, cand, y)
    assert g.passed and g.top1_agreement == 1.0 and g.accuracy_delta_points == 0.0


def test_gate_fails_on_disagreement_and_accuracy_drop() -> None:
    ref, y = _logits()
    cand = ref.copy()
    flip = np.arange(100, 106)  # 6 of 200 (3%) now predict another class, all correct before
    cand[flip, ref[flip].argmax(1)] -= 100.0
    g = _judge(ref, cand, y)
    assert not g.passed
    assert g.top1_agreement == pytest.approx(0.97)
    assert g.accuracy_delta_points == pytest.approx(-3.0)
    assert any("top-1 agreement" in f for f in g.failures)
    assert any("accuracy dropped" in f for f in g.failures)


def test_gate_allows_exactly_the_limit() -> None:
    ref, y = _logits()
    cand = ref.copy()
    cand[50, ref[50].argmax()] -= 100.0  # one of 200: 99.5% agreement, 0.5 points drop
    g = _judge(ref, cand, y)
    assert g.passed, g.failures


def test_gate_fails_on_nan() -> None:
    ref, y = _logits()
    cand = ref.copy()
    cand[0, 0] = np.nan
    g = _judge(ref, cand, y)
    assert not g.passed and any("NaN" in f for f in g.failures)
    assert g.to_dict()["passed"] is False  # serialisable: NaN/Inf become None


def test_gate_fp32_profile_checks_elementwise_error() -> None:
    ref, y = _logits()
    g = _judge(ref, ref + 1e-3, y, precision="fp32", min_top1_agreement=None)
    assert not g.passed and any("tolerance" in f for f in g.failures)
    assert _judge(ref, ref + 1e-6, y, precision="fp32", min_top1_agreement=None).passed


def test_gate_refuses_mismatched_shapes() -> None:
    ref, y = _logits()
    with pytest.raises(UsageError, match="differs from the reference"):
        _judge(ref, ref[:10], y)

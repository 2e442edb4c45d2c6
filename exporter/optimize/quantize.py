"""int8 ONNX variants with ONNX Runtime's own quantization tooling, and the int8 gate.

Static quantization (QDQ format, per-channel int8 weights, uint8 activations, calibrated on
training images) is the fast path measured on the 2-core AVX-512/VNNI CPU
(benchmarks/RESULTS.md). The dynamic (weights-only) variant quantizes only the classifier's
MatMul/Gemm nodes; it is produced on request but is slower than fp32 at large batches, so it
is never the default.

A quantized artifact ships only after :func:`gate_logits` passes on held-out images: top-1
agreement with the eager fp32 model and an accuracy drop within the tolerance.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.errors import InputFileError, UsageError
from exporter.verify.tolerance import accuracy_difference, compare, gate, profile_for, top1_classes

CALIB_BATCH = 8  # images per calibration step: bounds the augmented model's activation memory


def prepare_for_quantization(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Write a copy of ``src`` that ORT's quantizer accepts.

    ORT's quantizer re-runs ONNX shape inference and fails on dynamo-exported graphs with
    "Inferred shape and existing shape differ in dimension 0": the exporter's
    ``value_info`` records the example batch. Clearing it and running ORT's
    ``quant_pre_process`` (symbolic shape inference + graph optimisation) fixes that.

    Raises:
        InputFileError: ``src`` is not a loadable ONNX model.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf raises several types for a corrupt file
        raise InputFileError(f"cannot read ONNX model {src}: {exc}") from exc
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory(prefix="tlx-quant-", dir=Path(dest).parent) as tmp:
        cleared = Path(tmp) / "cleared.onnx"
        onnx.save(model, str(cleared))
        quant_pre_process(str(cleared), str(dest), skip_optimization=False)


class _ArrayReader:
    """ORT ``CalibrationDataReader`` over an in-memory float32 NCHW array, in small batches."""

    def __init__(self, input_name: str, images: np.ndarray, *, batch: int = CALIB_BATCH) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [np.ascontiguousarray(images[i : i + batch]) for i in range(0, len(images), batch)]
        )
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self._batches, None)
        return None if nxt is None else {self._name: nxt}

    def rewind(self) -> None:  # pragma: no cover - MinMax calibration never rewinds
        raise NotImplementedError


def _input_name(path: str | os.PathLike[str]) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initialisers]
    if len(names) != 1:
        raise InputFileError(f"{path}: expected one graph input, found {names}")
    return names[0]


def _last_matmul(path: Path) -> str | None:
    """Name of the last MatMul/Gemm node in graph order: the classification head."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    names = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm")]
    return names[-1] if names else None


def quantize_static_int8(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    calibration_images: np.ndarray,
) -> dict[str, Any]:
    """Static QDQ quantization of ``src`` into ``dest`` (which the caller makes atomic).

    Per-channel symmetric int8 weights, asymmetric uint8 activations, MinMax calibration.
    The classification head (the graph's last MatMul/Gemm, 4096 × classes) stays fp32: it
    costs nothing in speed and, measured on a synthetic-data run at 32 px, keeping it cut the
    largest logit error about 1.3-2.5× (0.30 → 0.23, 0.58 → 0.23 with 32 / 16 images).

    Args:
        src: an fp32 ONNX model (dynamo-exported is fine).
        dest: where the quantized model goes.
        calibration_images: float32 NCHW images already through the run's preprocessing.

    Returns:
        The settings used, for the manifest and the report.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images = np.asarray(calibration_images, dtype=np.float32)
    if images.ndim != 4 or len(images) < 1:
        raise UsageError(
            f"calibration images must be a non-empty NCHW batch, got shape {images.shape}"
        )
    settings = {
        "method": "static",
        "format": "QDQ",
        "weight_type": "int8",
        "activation_type": "uint8",
        "per_channel": True,
        "calibration": "MinMax",
        "calibration_images": len(images),
        "onnxruntime": ort.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="tlx-quant-", dir=Path(dest).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        prepare_for_quantization(src, pre)
        head = _last_matmul(pre)
        settings["fp32_nodes"] = [head] if head else []
        quantize_static(
            str(pre),
            str(dest),
            _ArrayReader(_input_name(pre), images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            nodes_to_exclude=settings["fp32_nodes"],
        )
    return settings


def quantize_dynamic_int8(
    src: str | os.PathLike[str], dest: str | os.PathLike[str]
) -> dict[str, Any]:
    """Weights-only int8 quantization of the classifier's MatMul/Gemm nodes.

    Activations are quantized on the fly per run; slower than fp32 at batch 64 on the
    measured CPU (benchmarks/RESULTS.md), so it is an opt-in variant, never the default fast one.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="tlx-quant-", dir=Path(dest).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        prepare_for_quantization(src, pre)
        quantize_dynamic(
            str(pre),
            str(dest),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    return {
        "method": "dynamic",
        "weight_type": "int8",
        "activation_type": "uint8 (dynamic, per run)",
        "per_channel": True,
        "op_types": ["MatMul", "Gemm"],
        "onnxruntime": ort.__version__,
    }


@dataclass(frozen=True)
class GateResult:
    """A candidate's logits against the eager fp32 reference on held-out labelled images.

    Judged by :func:`exporter.verify.tolerance.gate` under the precision's profile (the
    same judge ``tlx verify`` uses, ties included).
    """

    images: int
    profile: dict[str, Any]
    comparison: dict[str, Any]
    accuracy_reference: float
    accuracy_candidate: float
    max_accuracy_drop_points: float | None
    failures: list[str] = field(default_factory=list)
    accuracy_difference: dict[str, Any] | None = None  # the paired 95 % interval, in points

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def top1_agreement(self) -> float:
        return float(self.comparison["top1_agreement"])

    @property
    def max_abs_logit_diff(self) -> float:
        return float(self.comparison["max_abs_error"])

    @property
    def accuracy_delta_points(self) -> float:
        """Candidate minus reference accuracy, in percentage points."""
        return 100.0 * (self.accuracy_candidate - self.accuracy_reference)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "images": self.images,
            "top1_agreement": self.top1_agreement,
            "accuracy_reference": self.accuracy_reference,
            "accuracy_candidate": self.accuracy_candidate,
            "accuracy_delta_points": self.accuracy_delta_points,
            "max_accuracy_drop_points": self.max_accuracy_drop_points,
            "accuracy_difference": self.accuracy_difference,
            "profile": self.profile,
            "comparison": {
                k: (v if v is None or np.isfinite(v) else None) for k, v in self.comparison.items()
            },
            "failures": list(self.failures),
        }


def gate_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray,
    *,
    precision: str = "int8",
    min_top1_agreement: float | None = None,
    max_accuracy_drop_points: float | None = None,
) -> GateResult:
    """Gate a candidate on held-out images: tolerance profile, top-1 agreement, accuracy drop.

    Passes when every logit is finite, the logits are within the ``precision`` profile's
    elementwise tolerance (none for int8), top-1 agreement (near-ties of the reference count
    as agreement) ≥ ``min_top1_agreement``, and held-out accuracy drops at most
    ``max_accuracy_drop_points`` percentage points.

    Args:
        reference: eager fp32 logits ``(n, classes)``.
        candidate: the artifact's logits on the same images.
        labels: true class indices ``(n,)``.
        precision: tolerance profile: ``fp32``, ``fp16`` or ``int8``.
        min_top1_agreement: fraction in [0, 1]; None keeps the profile's own.
        max_accuracy_drop_points: allowed accuracy loss in percentage points; None keeps the
            profile's own (int8: 0.5; fp32/fp16 profiles do not gate accuracy).
    """
    ref = np.asarray(reference, dtype=np.float32)
    cand = np.asarray(candidate, dtype=np.float32)
    y = np.asarray(labels)
    if ref.shape != cand.shape or ref.ndim != 2 or y.shape != (ref.shape[0],) or not len(y):
        raise UsageError(
            f"gate inputs disagree: reference {ref.shape}, candidate {cand.shape}, labels {y.shape}"
        )
    tol = profile_for(
        precision,
        min_top1=min_top1_agreement,
        max_accuracy_drop_points=max_accuracy_drop_points,
    )
    cmp = compare(ref, cand, tol)
    ref_top1, cand_top1 = top1_classes(ref), top1_classes(cand)
    acc_ref = float((ref_top1 == y).mean())
    acc_cand = float((cand_top1 == y).mean())
    diff = accuracy_difference(ref_top1, cand_top1, y)
    verdict = gate(cmp, tol, accuracy_drop_points=100.0 * (acc_ref - acc_cand))
    return GateResult(
        accuracy_difference=diff.to_dict(),
        images=len(y),
        profile=tol.to_dict(),
        comparison=asdict(cmp),
        accuracy_reference=acc_ref,
        accuracy_candidate=acc_cand,
        max_accuracy_drop_points=tol.max_accuracy_drop_points,
        failures=list(verdict.failures),
    )

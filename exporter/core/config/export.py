"""Settings of ``tlx export``, including its ``triton`` format."""

from __future__ import annotations

from dataclasses import dataclass, field

EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
# Newest opset torch.onnx can emit (torch.onnx._constants.ONNX_MAX_OPSET in torch 2.10-2.14);
# the dynamo exporter authors at opset 18 and up-converts, checked to round-trip VGG16 on ORT.
DEFAULT_OPSET = 23
# The dynamo exporter's own opset (torchlib); older opsets need a lossy down-conversion.
MIN_DYNAMO_OPSET = 18
# The TorchScript-based exporter stops at opset 20 (ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET).
MAX_LEGACY_OPSET = 20


@dataclass(frozen=True)
class TritonConfig:
    """Settings of ``tlx export --format triton`` (a Triton model repository in RUN/triton).

    Attributes:
        model_name: the model's folder and name on the server.
        device: the target: which verify verdict chooses the artifact, and the instance kind
            of the default ``config.pbtxt`` (``configs/cpu.pbtxt`` and ``configs/gpu.pbtxt``
            are written either way).
        variant: ship this variant or artifact instead of the default choice.
        max_batch_size: the largest batch dynamic batching forms.
        max_queue_delay_us: how long a request may wait for others to join its batch.
        instances: model instances (per GPU, or on the CPU).
    """

    model_name: str = "vgg16"
    device: str = "cpu"
    variant: str | None = None
    max_batch_size: int = 32
    max_queue_delay_us: int = 100
    instances: int = 1


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``tlx export``.

    Attributes:
        formats: any of ``onnx``, ``torchscript``, ``pt2``.
        opset: ONNX opset (``None``: :data:`DEFAULT_OPSET`, or 20 for the legacy exporter).
        batch_size: the largest batch the artifact is checked at (and the fixed batch with
            ``static_batch``).
        static_batch: export a fixed batch of ``batch_size`` instead of a dynamic one.
        precision: ``fp32``; ``fp16`` writes ``model.fp16.onnx`` (fp32 inputs/outputs) instead
            of ``model.onnx``. TorchScript and .pt2 are always fp32.
        exporter: ``dynamo`` (``torch.onnx.export(dynamo=True)``) or ``legacy``.
        force: overwrite existing artifact files.
        seed: seed of the random check inputs.
        triton: settings of the ``triton`` format (not part of ``all``: it ships an artifact
            the other formats and ``tlx optimize`` made).
    """

    formats: tuple[str, ...] = EXPORT_FORMATS
    opset: int | None = None
    batch_size: int = 8
    static_batch: bool = False
    precision: str = "fp32"
    exporter: str = "dynamo"
    force: bool = False
    seed: int = 0
    triton: TritonConfig = field(default_factory=TritonConfig)

"""Triton ``config.pbtxt`` text, checked against Triton's own schema before it is written.

The text is rendered from the manifest's signature and parsed back with tritonclient's
``model_config_pb2.ModelConfig`` and ``google.protobuf.text_format``: a misspelt field or an
unbalanced brace is an export failure here, not a model that fails to load on the server
(ultralytics #18092, #21186; #22111: free-form metadata in ``parameters`` broke the parse, so
only keys the onnxruntime backend reads go there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.core.errors import EnvironmentUnavailable, GateFailed, InputFileError
from exporter.verify.triton_check import LABELS_FILE

# numpy/manifest dtype → Triton data type (the ones an image classifier can have).
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
# ORT's TensorRT accelerator (onnxruntime_backend README): FP16/INT8 enable those kernels;
# a QDQ int8 graph needs INT8 and no calibration table.
PRECISION_MODE = {"fp32": "FP32", "fp16": "FP16", "bf16": "FP32", "int8": "INT8"}
TRT_WORKSPACE_BYTES = 1 << 30
TRT_CACHE_ROOT = "/tmp/tlx-trt-cache"  # inside the container; mount a volume to keep engines
MODEL_FILE = "model.onnx"
KINDS = ("cpu", "gpu")


@dataclass(frozen=True)
class Tensor:
    """One input or output as Triton sees it (``dims`` without the batch dim when batched)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """Everything a config is rendered from."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int  # 0: the model has a fixed batch (dims then include it)
    precision: str
    instances: int
    max_queue_delay_us: int
    threads: int | None = None  # intra_op_thread_count of each instance (None: ORT's default)

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0


def tensors_from_manifest(
    entry: dict[str, Any], *, fixed_hw: tuple[int, int] | None
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], int | None]:
    """Inputs, outputs and the fixed batch (None when dynamic) from a manifest entry.

    A named (string) dim is dynamic: the batch dim goes to ``max_batch_size``, any other
    becomes -1 unless the artifact has a fixed H×W (the pooling fold).

    Raises:
        InputFileError: the entry has no signature, or a dtype or dim Triton cannot express.
    """
    name = entry.get("name", "artifact")
    ins, outs = entry.get("inputs") or [], entry.get("outputs") or []
    if not ins or not outs:
        raise InputFileError(
            f"manifest.json: {name} lists no inputs/outputs; "
            "re-export with `tlx export RUN --force`"
        )
    batches = set()
    result = []
    for group in (ins, outs):
        tensors = []
        for io in group:
            shape = list(io.get("shape") or [])
            dtype = TRITON_DTYPES.get(str(io.get("dtype")))
            if dtype is None or len(shape) < 2 or not str(io.get("name") or ""):
                raise InputFileError(
                    f"manifest.json: {name} has an input/output Triton cannot describe: {io!r}"
                )
            batches.add(shape[0] if isinstance(shape[0], int) else None)
            dims = [_dim(d) for d in shape[1:]]
            if group is ins and fixed_hw is not None and len(dims) == 3:
                dims[1:] = list(fixed_hw)
            tensors.append(Tensor(str(io["name"]), dtype, tuple(dims)))
        result.append(tuple(tensors))
    if len(batches) != 1:
        raise InputFileError(f"manifest.json: {name} mixes fixed and dynamic batch dims")
    return result[0], result[1], batches.pop()


def _dim(d: Any) -> int:
    if isinstance(d, bool) or not isinstance(d, int | str) or (isinstance(d, int) and d < 1):
        raise InputFileError(f"manifest.json: dim {d!r} is neither a positive size nor a name")
    return d if isinstance(d, int) else -1


def quote(text: str) -> str:
    """A protobuf text-format string literal; control characters are refused, not escaped."""
    if not text.isprintable():
        raise InputFileError(f"{text!r}: names in a Triton config must be printable")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(t: Tensor, *, labels: bool) -> str:
    lines = [f"    name: {quote(t.name)}", f"    data_type: {t.data_type}"]
    lines.append(f"    dims: {_dims(t.dims)}")
    if labels:
        lines.append(f"    label_filename: {quote(LABELS_FILE)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _warmup(spec: ModelSpec, batch: int) -> str:
    inputs = "\n".join(
        f"    inputs {{\n      key: {quote(t.name)}\n      value: {{\n"
        f"        data_type: {t.data_type}\n        dims: {_dims(concrete(t.dims))}\n"
        "        zero_data: true\n      }\n    }"
        for t in spec.inputs
    )
    return f'  {{\n    name: "zeros_batch_{batch}"\n    batch_size: {batch}\n{inputs}\n  }}'


def concrete(dims: tuple[int, ...]) -> tuple[int, ...]:
    # Warm-up (and the copy's check) needs real sizes; a dynamic H/W runs at 224 (torchvision's).
    return tuple(224 if d == -1 else d for d in dims)


def _trt_shapes(spec: ModelSpec, batch: int) -> str:
    b = (batch,) if spec.batched else ()
    return ",".join(
        f"{t.name}:" + "x".join(str(d) for d in (*b, *concrete(t.dims))) for t in spec.inputs
    )


def _tensorrt(spec: ModelSpec) -> str:
    top = spec.max_batch_size if spec.batched else 1
    params = {
        "precision_mode": PRECISION_MODE.get(spec.precision, "FP32"),
        "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{TRT_CACHE_ROOT}/{spec.name}",
        "trt_profile_min_shapes": _trt_shapes(spec, 1),
        "trt_profile_opt_shapes": _trt_shapes(spec, max(1, top // 2)),
        "trt_profile_max_shapes": _trt_shapes(spec, top),
    }
    body = "\n".join(
        f"        parameters {{ key: {quote(k)} value: {quote(v)} }}" for k, v in params.items()
    )
    return (
        "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
        f'      {{\n        name: "tensorrt"\n{body}\n      }}\n    ]\n  }}\n}}'
    )


def render_config(spec: ModelSpec, kind: str) -> str:
    """The ``config.pbtxt`` text for ``kind`` (``cpu``: KIND_CPU; ``gpu``: KIND_GPU + TensorRT)."""
    if kind not in KINDS:
        raise ValueError(kind)
    parts = [
        f"name: {quote(spec.name)}",
        'backend: "onnxruntime"',
        f"default_model_filename: {quote(MODEL_FILE)}",
        f"max_batch_size: {spec.max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(t, labels=False) for t in spec.inputs) + "\n]",
        "output [\n"
        + ",\n".join(_tensor_block(t, labels=i == 0) for i, t in enumerate(spec.outputs))
        + "\n]",
    ]
    if spec.batched:
        parts.append(
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {spec.max_queue_delay_us}\n}}"
        )
    parts.append(
        f"instance_group [\n  {{\n    count: {spec.instances}\n"
        f"    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n  }}\n]"
    )
    if spec.threads is not None:
        # The onnxruntime backend's own key: without it every instance's session starts a
        # thread per core of the node, not of the pod's CPU limit (kserve/kserve #1031).
        parts.append(
            f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: '
            f'"{spec.threads}" }} }}'
        )
    sizes = sorted({1, spec.max_batch_size}) if spec.batched else [1]
    parts.append("model_warmup [\n" + ",\n".join(_warmup(spec, b) for b in sizes) + "\n]")
    if kind == "gpu":
        parts.append(_tensorrt(spec))
    return "\n".join(parts) + "\n"


def require_tritonclient() -> Any:
    """tritonclient's generated model-config schema module: the Triton format's environment
    check (exit 3 before any file is read, not after the hashing); an optional dependency."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as exc:
        raise EnvironmentUnavailable(
            "the Triton export checks every config.pbtxt with tritonclient's model_config_pb2, "
            "which failed to import: pip install 'tritonclient[grpc]' (or tlx[serve])"
        ) from exc
    return pb2


def parse_config(text: str, *, where: str) -> Any:
    """Parse ``text`` as a Triton ``ModelConfig``.

    Raises:
        GateFailed: a field, type or brace error (the file is then not written).
        EnvironmentUnavailable: tritonclient is not installed.
    """
    pb2 = require_tritonclient()  # first: protobuf comes with tritonclient[grpc]
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise GateFailed(
            f"{where}: Triton's model_config schema rejects the config ({exc}); not written"
        ) from exc


def check_config(config: Any, spec: ModelSpec, kind: str, *, where: str) -> None:
    """The parsed config says what the spec says (names, types, dims, batching, device).

    Raises:
        GateFailed: naming the first field that differs.
    """
    pb2 = require_tritonclient()
    dtype = pb2.DataType.Name
    problems = []
    if config.name != spec.name or config.max_batch_size != spec.max_batch_size:
        problems.append("name/max_batch_size")
    for got, want in ((config.input, spec.inputs), (config.output, spec.outputs)):
        seen = [(t.name, dtype(t.data_type), tuple(t.dims)) for t in got]
        if seen != [(t.name, t.data_type, t.dims) for t in want]:
            problems.append(f"tensors {seen}")
    if not config.output or config.output[0].label_filename != LABELS_FILE:
        problems.append("label_filename")
    group = pb2.ModelInstanceGroup
    want_kind = group.KIND_GPU if kind == "gpu" else group.KIND_CPU
    if [g.kind for g in config.instance_group] != [want_kind]:
        problems.append("instance_group")
    if spec.batched != config.HasField("dynamic_batching") or not config.model_warmup:
        problems.append("dynamic_batching/model_warmup")
    if problems:
        raise GateFailed(f"{where}: the parsed config differs from the model: {problems[0]}")

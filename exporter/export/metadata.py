"""Metadata embedded in every artifact and recorded in ``manifest.json``.

Users ask for class names and the exact preprocessing inside the model file (ultralytics
#14145, onnx #6130): an artifact separated from its run folder must still say how to feed it.
The same record goes into ONNX ``metadata_props``, TorchScript ``_extra_files`` and .pt2
``extra_files``, so every consumer reads one schema.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from exporter.core.runfolder import Run

METADATA_FILE = "tlx_metadata.json"  # name inside TorchScript / .pt2 archives
METADATA_SCHEMA_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
JSON_KEYS_PROP = "tlx_json_keys"


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a ``Z`` suffix, to the second."""
    return (
        _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    )


def signature(info: Run, *, batch: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output descriptions of ``info``'s model; ``batch=None`` names the dynamic
    axis ``"batch"``."""
    b: int | str = BATCH_DIM if batch is None else int(batch)
    size = info.preprocessing.image_size
    inputs = [{"name": INPUT_NAME, "shape": [b, 3, size, size], "dtype": "float32"}]
    outputs = [{"name": OUTPUT_NAME, "shape": [b, info.num_classes], "dtype": "float32"}]
    return inputs, outputs


def shared_metadata(info: Run, *, source_sha256: str) -> dict[str, Any]:
    """What every artifact of a run has in common: classes, preprocessing, versions, training
    (``source_sha256``: the hash of the ``model.safetensors`` they were exported from)."""
    from exporter import __version__
    from exporter.core.envinfo import _version, git_commit, onnxruntime_version

    dataset = info.record.get("dataset") or {}
    return {
        "metadata_schema_version": METADATA_SCHEMA_VERSION,
        "class_names": list(info.class_names),
        "num_classes": info.num_classes,
        "preprocessing": info.preprocessing.to_dict(),
        "source_file": info.weights_path.name,
        "source_sha256": source_sha256,
        "dataset": dataset.get("name"),
        "best_val_accuracy": info.best_val_accuracy,
        "tlx_version": __version__,
        "tlx_git_commit": git_commit(),
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "onnx_version": _version("onnx"),
        "onnxruntime_version": onnxruntime_version(),
    }


def artifact_metadata(
    shared: dict[str, Any],
    info: Run,
    *,
    fmt: str,
    precision: str,
    batch: int | None,
    exporter: str,
    opset: int | None,
) -> dict[str, Any]:
    """The full record embedded in one artifact: ``shared`` (:func:`shared_metadata`) plus
    its own format, precision, :func:`signature`, how it was produced (``exporter``) and the
    ONNX opset (``None`` for other formats)."""
    inputs, outputs = signature(info, batch=batch)
    return {
        **shared,
        "format": fmt,
        "precision": precision,
        "inputs": inputs,
        "outputs": outputs,
        "input_names": [i["name"] for i in inputs],
        "output_names": [o["name"] for o in outputs],
        "exporter": exporter,
        "opset": opset,
        "exported_at": utc_now(),
    }


def to_json(meta: dict[str, Any]) -> str:
    """Serialise metadata for an archive's extra file."""
    return json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)


def to_onnx_props(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX ``metadata_props`` are string→string: strings stay, everything else is JSON.

    The key ``tlx_json_keys`` lists the JSON-encoded keys so decoding is unambiguous (a
    dataset called "null" stays a string).
    """
    props: dict[str, str] = {}
    json_keys = []
    for k, v in meta.items():
        if isinstance(v, str):
            props[k] = v
        else:
            props[k] = json.dumps(v, sort_keys=True, allow_nan=False)
            json_keys.append(k)
    props[JSON_KEYS_PROP] = json.dumps(sorted(json_keys))
    return props


def embed_in_onnx(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Write ``meta`` into the model's ``metadata_props`` (other keys kept) and name tlx as
    its producer: ``tlx export``'s files and ``tlx optimize``'s variants alike."""
    from exporter import __version__

    props = to_onnx_props(meta)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "tlx"
    model.producer_version = __version__


def from_onnx_props(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`to_onnx_props`; props without ``tlx_json_keys`` come back as strings."""
    try:
        json_keys = set(json.loads(props.get(JSON_KEYS_PROP, "[]")))
    except ValueError:
        json_keys = set()
    out: dict[str, Any] = {}
    for k, v in props.items():
        if k == JSON_KEYS_PROP:
            continue
        if k in json_keys:
            try:
                out[k] = json.loads(v)
                continue
            except ValueError:
                pass  # hand-edited file: show the raw text rather than fail
        out[k] = v
    return out

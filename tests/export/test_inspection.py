"""tlx inspect on hand-made small artifacts (fast: no VGG16 export needed).

The end-to-end inspect of a real exported run is in tests/export/test_export.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.fsio import sha256_file
from exporter.core.manifest import ArtifactEntry, FileRecord, Manifest, save_manifest
from exporter.export.inspection import inspect_target, read_artifact
from exporter.export.metadata import METADATA_FILE, to_json, to_onnx_props

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

runner = CliRunner()
META = {
    "format": "onnx",
    "class_names": ["cat", "dog"],
    "num_classes": 2,
    "dataset": "null",  # a string that looks like JSON must come back as a string
    "best_val_accuracy": 0.75,
    "opset": 18,
}


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, highlight=False), buf


def _write_run(run: Path) -> Path:
    """A run folder with a tiny ONNX model and a TorchScript file listed in a manifest."""
    import torch

    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "train.json").write_text(
        json.dumps(
            {
                "dataset": {"name": "toy", "class_names": ["cat", "dog"]},
                "preprocessing": {
                    "image_size": 4,
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                },
                "best": {"val_accuracy": 0.75},
            }
        )
    )
    w = numpy_helper.from_array(np.ones((2, 4), dtype=np.float32), name="w")
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["w"], ["wt"]),
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["s"]),
            helper.make_node("MatMul", ["s", "wt"], ["logits"]),
        ],
        "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            w,
            numpy_helper.from_array(np.array([0], dtype=np.int64), name="starts"),
            numpy_helper.from_array(np.array([4], dtype=np.int64), name="ends"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), name="axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for k, v in to_onnx_props(META).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save_model(model, str(run / "model.onnx"))

    traced = torch.jit.trace(torch.nn.Linear(4, 2), torch.randn(2, 4))
    ts_meta = {
        **META,
        "format": "torchscript",
        "inputs": [{"name": "input", "shape": ["batch", 4]}],
    }
    torch.jit.save(traced, str(run / "model.ts"), _extra_files={METADATA_FILE: to_json(ts_meta)})

    save_manifest(
        run,
        Manifest(
            source=FileRecord.of(run, "model.safetensors"),
            metadata={},
            artifacts={
                "model.onnx": ArtifactEntry(
                    "model.onnx",
                    "onnx",
                    [FileRecord.of(run, "model.onnx")],
                    extra={"opset": 18, "exporter": "hand-made"},
                ),
                "model.ts": ArtifactEntry(
                    "model.ts", "torchscript", [FileRecord.of(run, "model.ts")]
                ),
            },
        ),
    )
    return run


@pytest.fixture
def toy_run(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "run")


def test_onnx_artifact_metadata_signature_ops(toy_run: Path) -> None:
    console, buf = _console()
    info = inspect_target(toy_run / "model.onnx", console=console)
    assert info["metadata"]["class_names"] == ["cat", "dog"]
    assert info["metadata"]["dataset"] == "null"
    assert info["metadata"]["best_val_accuracy"] == 0.75
    assert info["inputs"] == [{"name": "input", "shape": ["batch", 1, 2, 2], "dtype": "float32"}]
    assert info["outputs"][0]["shape"] == ["batch", 2]
    assert info["opset"] == 18
    assert info["ops"] == {"Flatten": 1, "MatMul": 1, "Slice": 1, "Transpose": 1}
    text = buf.getvalue()
    for needle in ("operators", "MatMul", "opset 18", "signature", "cat", "model.onnx"):
        assert needle in text


def test_torchscript_metadata_read_without_loading(toy_run: Path) -> None:
    info = read_artifact(toy_run / "model.ts")
    assert info["metadata"]["format"] == "torchscript"
    assert info["inputs"][0]["shape"] == ["batch", 4]
    assert info["files"][0]["sha256"] == sha256_file(toy_run / "model.ts")


def test_run_folder_summary_and_artifact_table(toy_run: Path) -> None:
    console, buf = _console()
    info = inspect_target(toy_run, console=console)
    assert info["dataset"] == "toy"
    assert info["best_val_accuracy"] == 0.75
    assert {k: v["hash"] for k, v in info["artifacts"].items()} == {
        "model.onnx": "ok",
        "model.ts": "ok",
    }
    assert "0.7500" in buf.getvalue() and "toy" in buf.getvalue()


def test_changed_byte_is_an_integrity_error(toy_run: Path) -> None:
    path = toy_run / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.onnx does not match manifest\.json"):
        read_artifact(path)
    console, buf = _console()
    with pytest.raises(IntegrityError, match=r"model\.onnx do not match"):
        inspect_target(toy_run, console=console)
    assert "MISMATCH" in buf.getvalue()


def test_cli_exit_codes(toy_run: Path) -> None:
    from exporter.cli import app

    ok = runner.invoke(app, ["inspect", str(toy_run / "model.onnx")])
    assert ok.exit_code == 0, ok.output
    (toy_run / "model.ts").write_bytes(b"tampered")
    bad = runner.invoke(app, ["inspect", str(toy_run / "model.ts")])
    assert bad.exit_code == 2
    assert "model.ts" in bad.output and "Traceback" not in bad.output


def test_unlisted_or_unmanifested_files_are_refused(toy_run: Path, tmp_path: Path) -> None:
    stray = toy_run / "other.onnx"
    stray.write_bytes((toy_run / "model.onnx").read_bytes())
    with pytest.raises(InputFileError, match="not listed in"):
        read_artifact(stray)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.onnx").write_bytes(b"x")
    with pytest.raises(InputFileError, match=r"no manifest\.json beside"):
        read_artifact(alone / "model.onnx")
    with pytest.raises(InputFileError, match="does not exist"):
        inspect_target(tmp_path / "missing.onnx", console=_console()[0])


def test_run_without_manifest_says_so(toy_run: Path) -> None:
    (toy_run / "manifest.json").unlink()
    console, buf = _console()
    info = inspect_target(toy_run, console=console)
    assert info["artifacts"] == {}
    assert "tlx export" in buf.getvalue()


def test_model_printout_without_target_still_works() -> None:
    from exporter.cli import app

    out = runner.invoke(app, ["inspect", "--brief"])
    assert out.exit_code == 0, out.output
    assert "classifier[6]" in out.output

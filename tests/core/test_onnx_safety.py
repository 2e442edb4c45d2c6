"""exporter.core.onnx_safety: untrusted .onnx files and their external-data locations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from exporter.core.errors import InputFileError
from exporter.core.onnx_safety import check_onnx_file, external_locations, load_onnx_graph

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _tiny_model() -> onnx.ModelProto:
    """y = x + w, with w a 64-float initializer (big enough to go external)."""
    w = numpy_helper.from_array(np.arange(64, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _save_external(folder: Path, *, location: str = "w.bin") -> Path:
    """Save the tiny model with ``w`` in ``folder/w.bin``; return the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        _tiny_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    if location != "w.bin":
        _set_location(path, location)
    return path


def _set_location(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_self_contained_and_contained_external_data_pass(tmp_path: Path) -> None:
    inline = tmp_path / "inline.onnx"
    onnx.save_model(_tiny_model(), str(inline))
    check_onnx_file(inline)

    path = _save_external(tmp_path / "ext")
    assert external_locations(load_onnx_graph(path)) == ["w.bin"]
    check_onnx_file(path)
    # The data really is loadable from there (the check did not pass a broken model).
    loaded = onnx.load(str(path))
    assert numpy_helper.to_array(loaded.graph.initializer[0])[5] == 5.0


def test_subfolder_location_inside_the_folder_passes(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    (tmp_path / "m" / "data").mkdir()
    os.replace(tmp_path / "m" / "w.bin", tmp_path / "m" / "data" / "w.bin")
    _set_location(path, "data/w.bin")
    check_onnx_file(path)


def test_dotdot_location_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    os.replace(tmp_path / "m" / "w.bin", tmp_path / "w.bin")
    _set_location(path, "../w.bin")
    with pytest.raises(InputFileError, match=r"'\.\./w\.bin'.*'\.\.'"):
        check_onnx_file(path)


def test_absolute_location_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    target = (tmp_path / "m" / "w.bin").resolve()
    _set_location(path, str(target))
    with pytest.raises(InputFileError, match="absolute path"):
        check_onnx_file(path)


def test_windows_absolute_location_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    _set_location(path, "C:\\Windows\\w.bin")
    with pytest.raises(InputFileError, match="absolute path"):
        check_onnx_file(path)


def test_symlink_file_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    os.symlink(tmp_path / "m" / "w.bin", tmp_path / "m" / "link.bin")
    _set_location(path, "link.bin")
    with pytest.raises(InputFileError, match="symbolic link"):
        check_onnx_file(path)


def test_symlinked_folder_component_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(tmp_path / "m" / "w.bin", outside / "w.bin")
    os.symlink(outside, tmp_path / "m" / "sub")
    _set_location(path, "sub/w.bin")
    with pytest.raises(InputFileError, match=r"symbolic link .*sub"):
        check_onnx_file(path)


def test_hard_link_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    os.link(tmp_path / "m" / "w.bin", tmp_path / "elsewhere.bin")
    with pytest.raises(InputFileError, match=r"'w\.bin'.*hard link"):
        check_onnx_file(path)


def test_missing_external_file_rejected(tmp_path: Path) -> None:
    path = _save_external(tmp_path / "m")
    (tmp_path / "m" / "w.bin").unlink()
    with pytest.raises(InputFileError, match="does not exist"):
        check_onnx_file(path)


def test_zero_byte_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty \(0 bytes\)"):
        check_onnx_file(path)


@pytest.mark.parametrize(
    "payload",
    [b"this is not an onnx model\n" * 8, bytes(range(256)) * 4, b"\xff" * 100],
    ids=["text", "bytes", "ff"],
)
def test_garbage_file_rejected(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(payload)
    with pytest.raises(InputFileError, match="not a valid ONNX model"):
        check_onnx_file(path)


def test_truncated_file_rejected(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    onnx.save_model(_tiny_model(), str(good))
    data = good.read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"truncated or corrupt"):
        check_onnx_file(bad)


def test_symlinked_model_file_rejected(tmp_path: Path) -> None:
    good = tmp_path / "good.onnx"
    onnx.save_model(_tiny_model(), str(good))
    link = tmp_path / "model.onnx"
    os.symlink(good, link)
    with pytest.raises(InputFileError, match="symbolic link"):
        check_onnx_file(link)

"""``exporter.load(RUN).predict`` misused: one documented error type (``PredictInputError``,
a ``ValueError`` and a ``TlxError`` with exit code 2) naming the bad item, and a single image
counts as one image.

The run holds a hand-built 3-node ONNX classifier (pool → flatten → gemm) so no VGG16 is
exported here; the predictor code paths are the same for any artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import exporter
from exporter.core.errors import EXIT_USAGE, PredictInputError, TlxError, UsageError
from exporter.core.fsio import sha256_file
from exporter.serve.predictor import Predictor, load


def _tiny_onnx() -> bytes:
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 10], np.arange(30, dtype=np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.fixture(scope="module")
def tiny_run(module_tmp: Path, make_run_folder) -> Path:
    run = make_run_folder(module_tmp / "run")
    (run / "model.onnx").write_bytes(_tiny_onnx())
    weights = run / "model.safetensors"
    manifest = {
        "schema_version": 1,
        "source": {
            "file": weights.name,
            "sha256": sha256_file(weights),
            "bytes": weights.stat().st_size,
        },
        "metadata": {},
        "artifacts": {
            "model.onnx": {
                "format": "onnx",
                "precision": "fp32",
                "files": [
                    {
                        "path": "model.onnx",
                        "sha256": sha256_file(run / "model.onnx"),
                        "bytes": (run / "model.onnx").stat().st_size,
                    }
                ],
                "inputs": [{"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
                "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
            }
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def predictor(tiny_run: Path):
    with load(tiny_run, variant="model.onnx") as p:
        yield p


def _image(tmp_path: Path, name: str = "x.png", size: tuple[int, int] = (40, 36)) -> Path:
    path = tmp_path / name
    Image.new("RGB", size, (200, 30, 60)).save(path)
    return path


def test_the_error_type_is_documented_and_exported() -> None:
    assert exporter.PredictInputError is PredictInputError
    assert issubclass(PredictInputError, ValueError) and issubclass(PredictInputError, UsageError)
    assert issubclass(PredictInputError, TlxError) and PredictInputError.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        ([np.zeros((0, 0, 3), np.uint8)], "<array 0>: 0x0 px: the image is empty"),
        ([np.zeros((4, 0, 3), np.uint8)], "<array 0>: 0x4 px"),
        ([None], "<item 0>: NoneType None is not an image"),
        ([np.zeros((8, 8, 3), np.uint8), 7], "<item 1>: int 7 is not an image"),
        ([b"\x89PNG..."], "<item 0>: bytes"),
        ([""], "<item 0>: str ''"),
        ([np.zeros((8, 8, 3), np.float32)], "<array 0>: expected an HxWx3 uint8"),
        ([np.zeros((1, 500, 3), np.uint8)], "<array 0>: 500x1 px: the aspect ratio"),
        ([Image.new("F", (8, 8), float("nan"))], "<image 0>: 64 pixel values are NaN"),
        (b"\x89PNG...", "got bytes"),
        (42, "got int"),
        (np.zeros((2, 2, 2, 2, 3), np.uint8), "got an array of shape (2, 2, 2, 2, 3)"),
    ],
    ids=[
        "empty-array",
        "zero-width",
        "none",
        "int",
        "bytes-item",
        "empty-path",
        "float-array",
        "aspect",
        "nan-float-image",
        "bytes",
        "int-alone",
        "5d-array",
    ],
)
def test_each_misuse_raises_the_one_error_naming_the_item(
    predictor: Predictor, items: object, needle: str
) -> None:
    with pytest.raises(PredictInputError) as info:
        predictor.predict(items)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_bad_options_and_unreadable_files_raise_it_too(predictor: Predictor, tmp_path) -> None:
    with pytest.raises(PredictInputError, match="--top-k"):
        predictor.predict([], top_k=0)
    with pytest.raises(PredictInputError, match=r"missing\.png: no such file"):
        predictor.predict([str(tmp_path / "missing.png")])


def test_a_single_image_is_one_image_not_a_sequence(predictor: Predictor, tmp_path) -> None:
    path = _image(tmp_path)
    array = np.asarray(Image.open(path).convert("RGB"))  # 36 rows: once 36 "images"
    assert [p.source for p in predictor.predict(str(path))] == [str(path)]  # not 1 per char
    assert [p.source for p in predictor.predict(path)] == [str(path)]
    assert [p.source for p in predictor.predict(array)] == ["<array 0>"]
    assert [p.source for p in predictor.predict(Image.open(path))] == ["<image 0>"]
    one = predictor.predict(array)[0]
    assert one.top == predictor.predict([str(path)])[0].top
    batch = predictor.predict(np.stack([array, array, array]))  # N x H x W x 3: N images
    assert [p.source for p in batch] == ["<array 0>", "<array 1>", "<array 2>"]
    assert predictor.preprocess(array).shape == (1, 3, 32, 32)


def test_non_finite_inputs_are_refused_before_the_model(predictor: Predictor) -> None:
    x = np.zeros((3, 3, 32, 32), np.float32)
    x[1, 0, 0, 0] = np.nan
    x[2, 2, 5, 5] = -np.inf
    with pytest.raises(PredictInputError, match=r"rows \[1, 2\] hold NaN or Inf"):
        predictor.logits(x)
    with pytest.raises(PredictInputError, match="shape"):
        predictor.logits(np.zeros((3, 32, 32), np.float32))


def test_a_nan_float_tiff_is_refused_naming_the_file(predictor: Predictor, tmp_path) -> None:
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F").save(path)
    with pytest.raises(PredictInputError, match=r"nan\.tif: 256 pixel values are NaN or Inf"):
        predictor.predict([path])
    inf = tmp_path / "inf.tif"
    values = np.zeros((16, 16), np.float32)
    values[3, 3] = np.inf
    Image.fromarray(values, mode="F").save(inf)
    seen: list[str] = []
    assert predictor.predict([inf], on_error=lambda b: seen.append(b.line())) == []
    assert seen == [f"{inf}: 1 pixel values are NaN or Inf"]


def test_predict_after_close_says_closed(tiny_run: Path, tmp_path) -> None:
    p = load(tiny_run, variant="model.onnx")
    assert len(p.predict([_image(tmp_path)])) == 1
    p.close()
    p.close()  # idempotent
    for call in (
        lambda: p.predict([_image(tmp_path)]),
        lambda: p.logits(np.zeros((1, 3, 32, 32), np.float32)),
        lambda: p.preprocess([_image(tmp_path)]),
    ):
        with pytest.raises(PredictInputError, match="predictor is closed"):
            call()

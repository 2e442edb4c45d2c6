"""exporter.load / Predictor: the chosen artifact through the runtime registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import exporter
from exporter.core.errors import InputFileError, IntegrityError, UsageError
from exporter.serve.predictor import Prediction, Predictor, load, softmax, top_classes


def _images(n: int, size: int = 40, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def predictor(onnx_run: Path):
    with load(onnx_run) as p:
        yield p


def test_exporter_load_is_the_predictor_loader(onnx_run: Path) -> None:
    assert exporter.load is load
    with exporter.load(onnx_run, runtime="ort-cpu", variant="model.onnx") as p:
        assert isinstance(p, Predictor)
        assert p.runtime_name == "ort-cpu"
        assert p.artifact.name == "model.onnx"


def test_logits_equal_in_process_ort_on_the_same_file(predictor: Predictor, onnx_run: Path) -> None:
    from exporter.runtimes.ort_sessions import cpu_session

    x = predictor.preprocess(_images(5))
    assert x.shape == (5, 3, 32, 32) and x.dtype == np.float32
    session = cpu_session(onnx_run / "model.onnx")
    (want,) = session.run(None, {session.get_inputs()[0].name: x})
    got = predictor.logits(x)
    assert got.dtype == np.float32
    assert float(np.max(np.abs(got - want))) == 0.0


def test_preprocess_is_the_recorded_eval_transform(predictor: Predictor, onnx_run: Path) -> None:
    from exporter.core.preprocess import Preprocessing

    rec = json.loads((onnx_run / "manifest.json").read_text())["metadata"]["preprocessing"]
    transform = Preprocessing.from_dict(rec).eval_transform()
    imgs = _images(2, size=50)
    want = np.stack([transform(i).numpy() for i in imgs])
    np.testing.assert_array_equal(predictor.preprocess(imgs), want)


def test_predict_returns_top_k_classes_with_probabilities(
    predictor: Predictor, tmp_path: Path
) -> None:
    imgs = _images(3)
    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    seen = []
    preds = predictor.predict(
        [*paths, imgs[0]],
        top_k=3,
        batch_size=2,
        progress=lambda *a: seen.append(a),
        keep_logits=True,
    )
    assert [p.source for p in preds][:3] == [str(p) for p in paths]
    assert all(isinstance(p, Prediction) and len(p.top) == 3 for p in preds)
    for p in preds:
        probs = [prob for _, prob in p.top]
        assert probs == sorted(probs, reverse=True)
        assert all(name in predictor.classes for name, _ in p.top)
        want = softmax(p.logits[None])[0]
        assert p.top[0] == (predictor.classes[int(np.argmax(want))], pytest.approx(want.max()))
    # A saved PNG decodes to the same pixels as the in-memory image.
    np.testing.assert_array_equal(preds[0].logits, preds[3].logits)
    assert seen[-1][1:] == (4, 4)


def test_bad_image_raises_or_is_reported(predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = tmp_path / "good.png"
    _images(1)[0].save(good)
    with pytest.raises(InputFileError, match=r"bad\.jpg"):
        predictor.predict([good, bad])
    errors = []
    preds = predictor.predict([bad, good], on_error=errors.append)
    assert [p.source for p in preds] == [str(good)]
    assert [e.source for e in errors] == [str(bad)]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"variant": "../../etc/passwd"}, "--variant"),
        ({"variant": "x\n\x1b[31mred"}, "--variant"),
        ({"runtime": "rm -rf /"}, "unknown runtime"),
        ({"runtime": "torchscript"}, "--runtime torchscript"),  # no .ts in this run
        ({"runtime": "ort-cpu", "variant": "eager"}, "--runtime ort-cpu runs onnx"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_hostile_names_are_usage_errors(onnx_run: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(UsageError, match=re.escape(needle)) as info:
        load(onnx_run, **kwargs)
    assert "\n" not in str(info.value).replace("\\n", "")


@pytest.mark.parametrize(("kwargs"), [{"top_k": 0}, {"batch_size": 0}, {"top_k": True}])
def test_bad_predict_options(predictor: Predictor, kwargs: dict) -> None:
    with pytest.raises(UsageError):
        predictor.predict(_images(1), **kwargs)


def test_wrong_shapes_are_usage_errors(predictor: Predictor) -> None:
    with pytest.raises(UsageError, match="shape"):
        predictor.logits(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(UsageError, match="float32"):
        predictor.logits(np.zeros((1, 3, 32, 32), np.float64))


def test_changed_artifact_is_refused(
    make_run_folder, tmp_path: Path, copy_run, onnx_run, own
) -> None:
    run = copy_run(onnx_run, tmp_path / "copy", ("model.onnx",))
    with open(own(run / "model.onnx"), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError):
        load(run)


def test_run_without_manifest_is_refused(run_folder: Path) -> None:
    with pytest.raises(InputFileError, match="tlx export"):
        load(run_folder)


def test_top_classes_orders_and_caps() -> None:
    logits = np.array([[0.0, 2.0, 1.0]], np.float32)
    (top,) = top_classes(logits, ["a", "b", "c"], 5)
    assert [c for c, _ in top] == ["b", "c", "a"]
    assert sum(p for _, p in top) == pytest.approx(1.0)


def test_arrays_are_images_too(predictor: Predictor) -> None:
    img = _images(1)[0]
    array = np.asarray(img)
    by_array, by_pil = predictor.predict([array, img], top_k=2, keep_logits=True)
    assert by_array.source == "<array 0>" and by_pil.source == "<image 1>"
    np.testing.assert_array_equal(by_array.logits, by_pil.logits)
    errors = []
    preds = predictor.predict([array.astype(np.float32), array], on_error=errors.append)
    assert [p.source for p in preds] == ["<array 1>"]
    assert "uint8" in errors[0].reason


@pytest.mark.gpu
def test_cuda_predictor_passes_the_fp32_gate_against_cpu(onnx_run: Path) -> None:
    from exporter.verify.tolerance import compare, gate, profile_for

    with load(onnx_run, device="cuda") as gpu, load(onnx_run) as cpu:
        assert gpu.runtime_name == "ort-cuda"
        x = cpu.preprocess(_images(8))
        profile = profile_for("fp32")
        verdict = gate(compare(cpu.logits(x), gpu.logits(x), profile), profile)
        assert verdict.passed, verdict.failures


def test_non_finite_logits_fail_the_gate(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter.core.errors import GateFailed

    monkeypatch.setattr(
        predictor.runtime, "infer", lambda x: np.full((len(x), 10), np.nan, np.float32)
    )
    with pytest.raises(GateFailed, match="NaN"):
        predictor.predict(_images(2))

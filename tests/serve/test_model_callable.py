"""The per-request callable, without a server: bad requests fail alone, no traceback leaks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from exporter.serve.model_callable import (
    ERROR_KEY,
    MODEL_FAILED,
    STUB_PATCH,
    infer_callable,
    request_error,
    reshape_input,
    unwrap,
)


class _Request:
    def __init__(self, x: np.ndarray | None) -> None:
        self.data = {} if x is None else {"input": x}


class _Predictor:
    image_size = 32

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[int] = []

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("boom in /secret/path/runtime.py")
        self.batches.append(len(x))
        return np.repeat(x.reshape(len(x), -1)[:, :1], 10, axis=1)  # row i's first pixel


def _message(response: dict) -> str:
    return bytes(response[ERROR_KEY]).decode()


def _images(n: int, value: float) -> np.ndarray:
    """N images as Triton hands them over: [N, 1, 3, 32, 32] (the input's reshape)."""
    return np.full((n, 1, 3, 32, 32), value, np.float32)


def test_good_requests_run_as_one_batch_and_bad_ones_fail_alone() -> None:
    p = _Predictor()
    infer = infer_callable(p, max_batch=16)
    requests = [
        _Request(_images(2, 1.0)),
        _Request(np.zeros((1, 3, 32, 32), np.float32)),  # [2**62, 3, 32, 32]: Triton's batch 0
        _Request(_images(1, 2.0)),
        _Request(None),
        _Request(_images(1, 3.0).astype(np.float64)),
        _Request(_images(17, 4.0)),
        _Request(_images(1, np.nan)),
    ]
    out = infer(requests)
    assert p.batches == [3]  # only the good ones, together
    np.testing.assert_array_equal(out[0]["logits"], np.ones((2, 10), np.float32))
    np.testing.assert_array_equal(out[2]["logits"], np.full((1, 10), 2.0, np.float32))
    assert "read the request's batch dimension as 0" in _message(out[1])
    assert "expected [N, 3, 32, 32] FP32" in _message(out[1])
    assert "no input 'input'" in _message(out[3])
    assert "float64" in _message(out[4])
    assert "a batch of 17" in _message(out[5])
    assert "NaN or Inf" in _message(out[6])
    assert all("\n" not in _message(out[i]) for i in (1, 3, 4, 5, 6))


def test_a_model_failure_is_one_line_per_request_and_logged_with_its_traceback(caplog) -> None:
    infer = infer_callable(_Predictor(fail=True), max_batch=16)
    with caplog.at_level("ERROR", logger="tlx.serve"):
        out = infer([_Request(_images(1, 1.0)), _Request(_images(2, 1.0))])
    assert [_message(r) for r in out] == [MODEL_FAILED, MODEL_FAILED]
    assert "/secret/path" not in MODEL_FAILED
    assert "boom in /secret/path" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize(
    ("shape", "dtype", "fragment"),
    [
        ((1, 3, 32, 32), np.float32, ""),
        ((16, 3, 32, 32), np.float32, ""),
        ((0, 3, 32, 32), np.float32, "a batch of 0"),
        ((1, 3, 31, 32), np.float32, "received shape [1, 3, 31, 32]"),
        ((1, 3, 32, 32), np.float16, "float16"),
    ],
)
def test_request_error(shape, dtype, fragment: str) -> None:
    why = request_error(shape, dtype, image_size=32, max_batch=16)
    assert (fragment in why) if fragment else why == ""


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((2, 1, 3, 32, 32), ""),
        ((1, 3, 32, 32), "batch dimension as 0"),  # Triton's batch 0: no leading batch axis
        ((3, 32, 32), "batch dimension as 0"),
        ((1, 2, 3, 32, 32), "batch dimension as 0"),
        ((1, 1, 3, 31, 32), "received shape [1, 3, 31, 32]"),
        ((0, 1, 3, 32, 32), "a batch of 0"),
    ],
)
def test_unwrap_drops_the_reshape_axis_and_refuses_a_batch_of_0(shape, fragment: str) -> None:
    x, why = unwrap(np.zeros(shape, np.float32), image_size=32, max_batch=16)
    assert (fragment in why) if fragment else (why == "" and x.shape == (2, 3, 32, 32))


class _Model:
    model_name = "vgg16"

    def get_model_config(self) -> dict:
        return {"input": [{"name": "input", "dims": [3, 32, 32]}], "output": [{"name": "logits"}]}


def test_reshape_input_amends_the_config_pytriton_sends() -> None:
    model, other = _Model(), _Model()
    other.model_name = "other"

    triton = SimpleNamespace(_model_manager=SimpleNamespace(models=[model, other]))
    reshape_input(triton, "vgg16", 32)
    config = model.get_model_config()
    assert config["input"] == [
        {"name": "input", "dims": [3, 32, 32], "reshape": {"shape": [1, 3, 32, 32]}}
    ]
    assert "reshape" not in config["output"][0]
    assert "reshape" not in other.get_model_config()["input"][0]


def test_the_stub_patch_is_valid_python_that_overrides_pytritons_functions() -> None:
    pytest.importorskip("pytriton")
    from pathlib import Path

    import pytriton.proxy

    original = (Path(pytriton.proxy.__file__).parent / "model.py").read_text()
    tree = compile(original + STUB_PATCH, "model.py", "exec")  # a syntax error fails here
    assert tree is not None
    assert "def _wrap_response(" in original and "class TritonPythonModel" in original
    assert "def execute(self, triton_requests)" in original

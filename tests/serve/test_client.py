"""The KServe v2 client's parsing and its checks of what a server serves (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.core.manifest import load_manifest
from exporter.core.runfolder import open_run
from exporter.serve.client import (
    MalformedAnswer,
    ServedModel,
    TritonHttpClient,
    check_served_model,
    decode_response,
    is_loopback,
    parse_url,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("http://localhost", ("localhost", 80)),
        ("http://[::1]:8000/", ("::1", 8000)),
    ],
)
def test_parse_url_accepts_base_urls(url: str, expected: tuple[str, int]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["https://h:1", "ftp://h", "http://", "http://h:99999", "http://h:8000/v2", "http://h?x=1"],
)
def test_parse_url_refuses_anything_else_naming_the_option(url: str) -> None:
    with pytest.raises(UsageError, match="--server"):
        parse_url(url)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("192.0.2.1")
    assert not is_loopback("no-such-host.invalid")


def test_decode_response_binary_and_json() -> None:
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = json.dumps(
        {
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": logits.nbytes},
                }
            ]
        }
    ).encode()
    out = decode_response(head + logits.tobytes(), str(len(head)), "logits")
    np.testing.assert_array_equal(out, logits)
    body = json.dumps(
        {
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": list(range(6))}
            ]
        }
    ).encode()
    np.testing.assert_array_equal(decode_response(body, None, "logits"), logits)
    with pytest.raises(MalformedAnswer, match="no output 'probs'"):
        decode_response(body, None, "probs")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1, 2]", "malformed infer response"),
        (b'{"outputs": {"name": "logits"}}', "not a list"),
        (b'{"outputs": [{"name": "logits", "shape": ["2"], "data": [1, 2]}]}', "not a count"),
        (b'{"outputs": [{"name": "logits", "shape": [3], "data": [1, 2]}]}', "reshape"),
        (b'{"outputs": [{"name": "logits", "data": [1]}]}', "missing 'shape'"),
        (b"not json", "malformed infer response"),
    ],
)
def test_decode_response_refuses_a_malformed_answer_in_one_line(body: bytes, says: str) -> None:
    with pytest.raises(MalformedAnswer, match=says) as info:
        decode_response(body, None, "logits")
    assert "\n" not in str(info.value)


def test_decode_response_refuses_a_binary_size_past_the_body() -> None:
    head = json.dumps(
        {"outputs": [{"name": "logits", "shape": [1], "parameters": {"binary_data_size": 400}}]}
    ).encode()
    with pytest.raises(MalformedAnswer, match="runs past the body"):
        decode_response(head + b"\0" * 4, str(len(head)), "logits")


def test_nothing_listening_is_environment_unavailable(ports) -> None:
    (port,) = ports(1)
    with TritonHttpClient(f"http://127.0.0.1:{port}") as c:
        assert not c.ready()
        with pytest.raises(EnvironmentUnavailable, match="no server answers"):
            c.model("vgg16")


def _served(run: Path, **changes) -> ServedModel:
    sha = load_manifest(run).artifacts["model.onnx"].files[0].sha256
    base = {
        "name": "vgg16",
        "max_batch_size": 8,
        "input_name": "input",
        "input_dims": (3, 32, 32),
        "input_datatype": "FP32",
        "output_name": "logits",
        "num_classes": 10,
        "instances": 1,
        "dynamic_batching": {},
        "parameters": {"tlx_artifact": "model.onnx", "tlx_sha256": sha},
    }
    return ServedModel(**{**base, **changes})


def test_check_served_model_accepts_this_runs_file(onnx_run: Path) -> None:
    assert check_served_model(open_run(onnx_run), _served(onnx_run)) == []


def test_check_served_model_notes_an_unnamed_file(onnx_run: Path) -> None:
    notes = check_served_model(open_run(onnx_run), _served(onnx_run, parameters={}))
    assert notes and "does not name" in notes[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_dims": (3, 64, 64)}, "64 px"),
        ({"input_dims": (1, 32, 32)}, r"\(3, H, W\)"),
        ({"num_classes": 5}, "5 outputs"),
        ({"parameters": {"tlx_artifact": "x.onnx", "tlx_sha256": "ab" * 32}}, "not a file of"),
    ],
)
def test_check_served_model_refuses_another_runs_model(
    onnx_run: Path, changes: dict, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        check_served_model(open_run(onnx_run), _served(onnx_run, **changes))

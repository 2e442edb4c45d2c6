"""`tlx serve` on a real Triton server: readiness, parity, batching, bad requests, clients.

Every test here talks to one module-scoped server (conftest.py: ``served``).
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import ServeConfig
from exporter.core.manifest import load_manifest
from exporter.serve.client import ServerError, TritonHttpClient
from exporter.serve.predictor import load
from exporter.serve.server import instance_plan

MODEL = "vgg16"


@pytest.fixture(scope="module")
def local(onnx_run: Path):
    """The same artifact in this process, on the same runtime."""
    with load(onnx_run, runtime="ort-cpu", variant="model.onnx") as p:
        yield p


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def test_ready_only_with_the_warm_model_and_names_the_file(served, onnx_run: Path) -> None:
    with TritonHttpClient(served.url) as c:
        assert c.ready()
        assert c.ready(MODEL)
        model = c.model(MODEL)
    manifest = load_manifest(onnx_run)
    assert model.artifact == "model.onnx"
    assert model.sha256 == manifest.artifacts["model.onnx"].files[0].sha256
    assert (model.max_batch_size, model.input_dims, model.num_classes) == (16, (3, 32, 32), 10)
    assert model.dynamic_batching["max_queue_delay_microseconds"] == 5000
    ready = next(line for line in served.stdout if line.startswith("ready:"))
    assert "model.onnx on ort-cpu" in ready and "max abs 0)" in ready
    # No --instances/--threads: the CPU plan, and the server reports what it runs.
    instances, threads = instance_plan(ServeConfig())
    assert f"(x{instances}, {threads} thread(s) each," in ready
    assert model.instances == instances


@pytest.mark.parametrize("n", [1, 3, 16])
def test_served_logits_equal_in_process_ort_exactly(served, local, n: int) -> None:
    x = _batch(n, seed=n)
    with TritonHttpClient(served.url) as c:
        out = c.infer(MODEL, x)
    assert out.dtype == np.float32 and out.shape == (n, 10)
    assert float(np.max(np.abs(out - local.logits(x)))) == 0.0


def test_official_tritonclient_http_and_grpc_get_the_same_logits(served, local) -> None:
    """A client the team did not write, over both protocols."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    httpclient = pytest.importorskip("tritonclient.http")
    x = _batch(4, seed=7)
    expected = local.logits(x)

    h = httpclient.InferenceServerClient(url=f"127.0.0.1:{served.http_port}")
    assert h.is_model_ready(MODEL)
    assert h.get_model_metadata(MODEL)["inputs"][0]["name"] == "input"
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out_h = h.infer(MODEL, [inp]).as_numpy("logits")
    h.close()

    g = grpcclient.InferenceServerClient(url=f"127.0.0.1:{served.grpc_port}")
    assert g.is_server_ready()
    ginp = grpcclient.InferInput("input", list(x.shape), "FP32")
    ginp.set_data_from_numpy(x)
    out_g = g.infer(MODEL, [ginp]).as_numpy("logits")
    g.close()
    np.testing.assert_array_equal(out_h, expected)
    np.testing.assert_array_equal(out_g, expected)


def test_concurrent_requests_are_batched_by_the_server(served) -> None:
    with TritonHttpClient(served.url) as c:
        before = c.stats(MODEL)
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        try:
            with TritonHttpClient(served.url) as c:
                for i in range(4):
                    c.infer(MODEL, _batch(1, seed=seed * 10 + i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    with TritonHttpClient(served.url) as c:
        after = c.stats(MODEL)
    images = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert images == 48
    assert executions < images  # the dynamic batcher combined requests
    sizes = {b["batch_size"] for b in after["batch_stats"]}
    assert max(sizes) > 1


def _post(port: int, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _json_request(shape, datatype="FP32", name="input", values=None) -> bytes:
    n = int(np.prod(shape))
    data = values if values is not None else [0.0] * n
    return json.dumps(
        {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}
    ).encode()


BAD_REQUESTS = {
    "wrong shape": (_json_request([1, 3, 32, 31]), "unexpected shape"),
    "no batch dimension": (_json_request([3, 32, 32]), "unexpected shape"),
    "wrong dtype": (_json_request([1, 3, 32, 32], datatype="FP64"), "data-type"),
    "strings": (_json_request([1, 3, 32, 32], datatype="BYTES", values=["a"] * 3072), "data-type"),
    "wrong input name": (_json_request([1, 3, 32, 32], name="image"), "unexpected inference input"),
    "batch above max": (_json_request([17, 3, 32, 32]), "batch-size must be <= 16"),
    "no inputs": (b'{"inputs": []}', "expected 1 inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_a_400_with_a_message_and_the_server_keeps_serving(
    served, local, case: str
) -> None:
    body, message = BAD_REQUESTS[case]
    status, text = _post(served.http_port, body)
    assert status == 400, text
    assert message in json.loads(text)["error"]
    x = _batch(2)
    with TritonHttpClient(served.url) as c:
        assert float(np.max(np.abs(c.infer(MODEL, x) - local.logits(x)))) == 0.0


def test_binary_request_with_a_short_tensor_is_a_400(served) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 32, 32],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 12288},
                }
            ]
        }
    ).encode()
    status, text = _post(
        served.http_port, head + b"\0" * 100, {"Inference-Header-Content-Length": str(len(head))}
    )
    assert status == 400 and "unexpected size for input" in text


@pytest.mark.parametrize("body", [b"garbage{{", b"\x00\xff\xfe", b"", b'{"inputs": [{"name"'])
def test_garbage_body_is_refused_with_a_message_and_the_server_keeps_serving(
    served, body: bytes
) -> None:
    # Triton <= 2.51 (the one nvidia-pytriton 0.7 bundles) reports a body that is not JSON as
    # an internal error: HTTP 500 (triton-inference-server/server #8762; fix proposed in
    # #8773). The answer still names the parse failure and the server stays up.
    status, text = _post(served.http_port, body)
    error = json.loads(text)["error"]
    assert status == 400 or (status == 500 and "failed to parse the request JSON" in error), text
    with TritonHttpClient(served.url) as c:
        assert c.infer(MODEL, _batch(1)).shape == (1, 10)


def test_our_client_reports_the_servers_message(served) -> None:
    with TritonHttpClient(served.url) as c, pytest.raises(ServerError, match="data-type") as info:
        c.infer(MODEL, _batch(1).astype(np.float64))
    assert info.value.status == 400


def test_verify_server_passes_and_writes_its_own_report(
    served, onnx_run: Path, tmp_path, copy_run
) -> None:
    run = copy_run(onnx_run, tmp_path / "run", ("model.onnx",))  # same file, own folder
    result = CliRunner().invoke(
        app, ["verify", str(run), "--server", served.url, "--samples", "16", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((run / "verify-server.json").read_text())
    (cand,) = report["candidates"]
    assert report["verdict"] == "pass"
    assert cand["runtime"] == "triton-http" and cand["artifact"] == "model.onnx"
    assert cand["overall"]["max_abs_error"] < 1e-4
    assert cand["overall"]["top1_agreement_pct"] == 100.0
    assert not (run / "verify.json").exists()  # the run's own verdicts are not touched


def test_loadtest_sweep_writes_bench_shaped_reports(served, onnx_run: Path, tmp_path) -> None:
    out = tmp_path / "lt"
    result = CliRunner().invoke(
        app,
        [
            "loadtest",
            str(onnx_run),
            "--server",
            served.url,
            "--concurrency",
            "1,8",
            "--window",
            "0.5",
            "--warmup",
            "0.3",
            "--max-windows",
            "4",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("loadtest.json", "loadtest.md", "loadtest.csv", "loadtest.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "loadtest.json").read_text())
    assert report["command"] == "loadtest" and report["errors_total"] == 0
    rows = {r["concurrency"]: r for r in report["rows"]}
    assert set(rows) == {1, 8}
    for r in rows.values():
        assert r["requests"] > 0 and r["errors"] == 0
        assert r["latency_ms_p50"] <= r["latency_ms_p99"]
        assert r["server_available"] and r["server_compute_ms"] > 0
    assert rows[1]["server_batch_avg"] == 1.0
    assert rows[8]["server_batch_avg"] > 1.0  # 8 requests in flight, batched by the server
    assert report["setup"]["served"]["artifact"] == "model.onnx"


def _binary_request(shape: list[int], nbytes: int = 12288) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + b"\0" * nbytes, {"Inference-Header-Content-Length": str(len(head))}


# Shapes whose batch dimension Triton reads as 0 (a multiple of 2**32, or 0) while the bytes
# hold one image: they pass its checks and reach the model. Before the input's reshape
# (model_callable.reshape_input), Triton 2.51's Python backend counted 3 rows for each where
# its scheduler counted 1, and failed the whole batch it joined ("batch size 18 ... max allowed
# is 16"): 5-25 of 200 good requests in the mixed stream below.
OVERFLOWING_SHAPES = [[2**62, 3, 32, 32], [0, 3, 32, 32], [2**61, 3, 32, 32]]
BATCH_POISONING_SHAPE = [2**62, 3, 32, 32]
# Triton reads the batch dimension modulo 2**32: this one is a well-formed request of 1 image.
WRAPS_TO_ONE = [2**32 + 1, 3, 32, 32]


def _assert_one_clean_line(status: int, text: str) -> None:
    assert 400 <= status < 500, (status, text)
    error = json.loads(text)["error"]
    assert "\n" not in error and "Traceback" not in error, error
    assert ".py" not in error and "/tmp" not in error and "/work" not in error, error


def _mixed_stream(served, local, shapes: list[list[int]]) -> dict[tuple[str, int], object]:
    """200 good requests from 8 threads with 20 of ``shapes`` spread among them."""
    jobs = [("good", i) for i in range(200)]
    for k in range(20):  # spread through the stream, so they share batches with good ones
        jobs.insert(k * 11 + 5, ("bad", k))
    lock = threading.Lock()
    results: dict[tuple[str, int], object] = {}

    def worker(mine: list[tuple[str, int]]) -> None:
        with TritonHttpClient(served.url) as c:
            for kind, i in mine:
                try:
                    if kind == "good":
                        out: object = c.infer(MODEL, _batch(1 + i % 3, seed=1000 + i))
                    else:
                        body, headers = _binary_request(shapes[i % len(shapes)])
                        out = _post(served.http_port, body, headers)
                except BaseException as exc:
                    out = exc
                with lock:
                    results[(kind, i)] = out

    threads = [threading.Thread(target=worker, args=(jobs[t::8],)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_malformed_requests_mixed_into_batches_fail_alone(served, local) -> None:
    """200 good requests from 8 threads, 20 malformed ones among them: no good one fails."""
    results = _mixed_stream(served, local, OVERFLOWING_SHAPES)
    failed = {k: v for k, v in results.items() if k[0] == "good" and not isinstance(v, np.ndarray)}
    assert not failed, f"{len(failed)} good request(s) failed, e.g. {next(iter(failed.values()))}"
    for i in range(200):
        expected = local.logits(_batch(1 + i % 3, seed=1000 + i))
        np.testing.assert_allclose(results[("good", i)], expected, rtol=1e-4, atol=1e-4)
    for k in range(20):
        status, text = results[("bad", k)]
        _assert_one_clean_line(status, text)
        assert "expected [N, 3, 32, 32] FP32" in text


def test_overflowing_shape_over_grpc_is_invalid_argument_in_one_line(served, local) -> None:
    grpc = pytest.importorskip("grpc")
    service = pytest.importorskip("tritonclient.grpc.service_pb2")
    service_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        stub = service_grpc.GRPCInferenceServiceStub(channel)
        for shape in ([-(2**63), 3, 32, 32], [2**62, 3, 32, 32], [1, 3, 32, 32]):
            request = service.ModelInferRequest(model_name=MODEL)
            tensor = request.inputs.add(name="input", datatype="FP32")
            tensor.shape.extend(shape)
            x = _batch(1, seed=5)
            request.raw_input_contents.append(x.tobytes())
            if shape[0] == 1:
                answer = stub.ModelInfer(request, timeout=60)
                out = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(1, 10)
                np.testing.assert_allclose(out, local.logits(x), rtol=1e-4, atol=1e-4)
                continue
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details()
            assert "expected [N, 3, 32, 32]" in details and "\n" not in details
            assert "Traceback" not in details and ".py" not in details


def test_a_wrapping_batch_dimension_does_not_fail_the_batch_it_joins(served, local) -> None:
    results = _mixed_stream(served, local, [BATCH_POISONING_SHAPE])
    failed = [k for k, v in results.items() if k[0] == "good" and not isinstance(v, np.ndarray)]
    assert not failed, f"{len(failed)} good request(s) failed"
    for k in range(20):
        _assert_one_clean_line(*results[("bad", k)])


def _burst(served, shapes: list[list[int]], seed: int) -> dict[tuple[str, int], object]:
    """40 requests sent at once: 32 good single images and 8 of ``shapes`` among them."""
    jobs = [("bad" if i % 5 == 2 else "good", seed + i) for i in range(40)]
    barrier = threading.Barrier(len(jobs))
    results: dict[tuple[str, int], object] = {}

    def one(kind: str, i: int) -> None:
        barrier.wait(timeout=60)
        try:
            if kind == "good":
                with TritonHttpClient(served.url) as c:
                    out: object = c.infer(MODEL, _batch(1, seed=i))
            else:
                out = _post(served.http_port, *_binary_request(shapes[i % len(shapes)]))
        except BaseException as exc:
            out = exc
        results[(kind, i)] = out

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_full_batches_with_wrapping_requests_in_them_still_run(served, local) -> None:
    """The case that failed whole batches before the input's reshape, deterministically.

    A burst queues up while an instance runs, so the scheduler forms batches of 16 rows that
    hold batch-0 requests (Triton's Python backend then counted 3 rows for each).
    """
    shapes = [BATCH_POISONING_SHAPE, [0, 3, 32, 32], [3 * 2**32, 3, 32, 32]]
    for burst in range(3):
        results = _burst(served, shapes, seed=burst * 100)
        failed = [v for k, v in results.items() if k[0] == "good" and not isinstance(v, np.ndarray)]
        assert not failed, f"burst {burst}: {len(failed)} of 32 good failed, e.g. {failed[0]}"
        for (kind, i), out in results.items():
            if kind == "good":
                expected = local.logits(_batch(1, seed=i))
                np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
            else:
                _assert_one_clean_line(*out)


def test_a_batch_dimension_of_2_32_plus_1_is_one_image_and_hurts_no_one(served, local) -> None:
    """Triton reads it as 1 (modulo 2**32), which matches the bytes: answered as one image."""
    results = _mixed_stream(served, local, [WRAPS_TO_ONE])
    failed = [k for k, v in results.items() if k[0] == "good" and not isinstance(v, np.ndarray)]
    assert not failed, f"{len(failed)} good request(s) failed"
    for k in range(20):
        status, text = results[("bad", k)]
        assert status == 200 and '"shape":[1,10]' in text, text


def test_every_malformed_request_gets_one_clean_line(served) -> None:
    """Whatever Triton does with the batch, the malformed request itself is a 4xx, one line."""
    for shape in OVERFLOWING_SHAPES:
        body, headers = _binary_request(shape)
        status, text = _post(served.http_port, body, headers)
        _assert_one_clean_line(status, text)

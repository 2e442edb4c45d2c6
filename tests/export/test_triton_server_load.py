"""The exported Triton repository, unchanged, loaded and served by a real tritonserver.

nvidia-pytriton bundles tritonserver 2.51 with only the Python backend, so the ONNX Runtime
backend that ``config.pbtxt`` names is stood in for by a Python-based backend of the same name
(``ort_standin_backend.py``). Triton itself then parses, normalises and validates the config,
creates the instance group, runs the ``model_warmup`` samples, batches dynamically and answers
the classification extension from ``labels.txt``: everything a server does with the repository
except the ORT backend's own C++ code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_OK
from exporter.runtimes.ort_sessions import cpu_logits
from exporter.serve.client import TritonHttpClient

MODEL = "vgg16"
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def triton_bin() -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("nvidia-pytriton ships tritonserver for Linux only")
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (tlx[serve])")
    from pytriton.utils.distribution import get_root_module_path

    return get_root_module_path() / "tritonserver"


@pytest.fixture(scope="module")
def backends(triton_bin: Path, module_tmp: Path) -> Path:
    """The bundled Python backend, its stub for this Python, and the ORT stand-in."""
    folder = module_tmp / "backends"
    python = folder / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(triton_bin / "backends" / "python" / name, python / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_bin / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy(stub, python / stub.name)
    standin = folder / "onnxruntime"
    standin.mkdir()
    source = (Path(__file__).parent / "ort_standin_backend.py").read_text()
    site = [p for p in sys.path if p.endswith("site-packages")]
    (standin / "model.py").write_text(f"import sys\nsys.path[:0] = {site!r}\n{source}")
    return folder


@pytest.fixture(scope="module")
def repo_run(onnx_run: Path, module_tmp: Path, link_run) -> Path:
    run = link_run(onnx_run, module_tmp / "run")
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "triton", "--max-batch", "8", "--instances", "2"]
    )
    assert result.exit_code == EXIT_OK, result.stderr
    return run


def _start(triton_bin: Path, repo: Path, backends: Path, log: Path, port: int) -> subprocess.Popen:
    from pytriton.utils.distribution import get_libs_path

    from exporter.serve.launch import libpython_on_library_path

    cmd = [
        str(triton_bin / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={port}",
        "--allow-grpc=false",
        "--allow-metrics=false",
        "--exit-on-error=true",
        "--exit-timeout-secs=10",  # a client left connected must not hold the teardown 30 s
    ]
    with libpython_on_library_path():
        env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (env.get("LD_LIBRARY_PATH"), str(get_libs_path())) if p
    )
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def _errors(log: Path) -> str:
    return "\n".join(line for line in log.read_text().splitlines() if line.startswith("E"))


@pytest.fixture(scope="module")
def server(triton_bin: Path, repo_run: Path, backends: Path, ports) -> Iterator[str]:
    log = repo_run.parent / "tritonserver.log"
    (port,) = ports(1)
    proc = _start(triton_bin, repo_run / "triton", backends, log, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"tritonserver exited:\n{_errors(log)}"
            assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s:\n{_errors(log)}"
            try:
                with TritonHttpClient(url) as c:
                    if c.ready(MODEL):
                        break
            except Exception:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_repository_loads_warm_with_its_config(server: str, repo_run: Path) -> None:
    with TritonHttpClient(server) as c:
        model = c.model(MODEL)
        config = c.get_json(f"/v2/models/{MODEL}/config")
    assert (model.max_batch_size, model.input_dims, model.num_classes) == (8, (3, 32, 32), 10)
    assert model.instances == 2 and config["instance_group"][0]["kind"] == "KIND_CPU"
    assert "max_queue_delay_microseconds" in model.dynamic_batching
    assert [w["batch_size"] for w in config["model_warmup"]] == [1, 8]
    log = (repo_run.parent / "tritonserver.log").read_text()
    assert "successfully loaded 'vgg16'" in log


def test_served_logits_and_classification_match_the_onnx_file(server: str, repo_run: Path) -> None:
    import tritonclient.http as httpclient

    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    local = cpu_logits(repo_run / "model.onnx", x, batch=len(x))
    with TritonHttpClient(server) as c:
        served = c.infer(MODEL, x)
    np.testing.assert_allclose(served, local, rtol=0, atol=1e-4)

    # The classification extension (an official client): Triton reads labels.txt itself.
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("logits", class_count=2)
    try:
        answer = client.infer(MODEL, [inp], outputs=[out]).as_numpy("logits")
    finally:
        client.close()
    classes = json.loads((repo_run / "train.json").read_text())["dataset"]["class_names"]
    for row, top in zip(answer, np.argsort(-local, axis=1)[:, :2], strict=True):
        labels = [entry.decode().split(":")[2] for entry in row]
        assert labels == [classes[i] for i in top]


def test_concurrent_requests_are_batched_by_triton(server: str) -> None:
    def stats() -> tuple[int, int]:
        with TritonHttpClient(server) as c:
            s = c.get_json(f"/v2/models/{MODEL}/stats")["model_stats"][0]
        return s["inference_count"], s["execution_count"]

    before = stats()
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with TritonHttpClient(server) as c:
                for _ in range(4):
                    c.infer(MODEL, x)
        except BaseException as exc:  # reported below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # Triton records an execution's statistics after its responses are sent: wait for them.
    deadline = time.monotonic() + 30
    while (now := stats())[0] - before[0] < 64 and time.monotonic() < deadline:
        time.sleep(0.2)
    inferences, executions = (a - b for a, b in zip(now, before, strict=True))
    assert inferences == 64
    assert executions < inferences, "no two requests were ever run as one batch"


def test_triton_refuses_a_config_its_schema_allows_but_its_rules_do_not(
    triton_bin: Path, repo_run: Path, backends: Path, tmp_path: Path, ports
) -> None:
    """The control: the same harness fails on a broken repository, naming Triton's reason."""
    repo = tmp_path / "triton"
    shutil.copytree(repo_run / "triton", repo)
    config = repo / MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 3,", "dims: [ -3,", 1))
    log = tmp_path / "tritonserver.log"
    proc = _start(triton_bin, repo, backends, log, *ports(1))
    assert proc.wait(timeout=START_TIMEOUT_S) != 0
    assert "dimension must be integer >= 1" in _errors(log)

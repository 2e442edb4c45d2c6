"""`tlx serve` start and stop: signals drain and leave no process; what cannot start is exit 3."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import ServeConfig
from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.serve.client import TritonHttpClient
from exporter.serve.launch import drain_shortfall
from exporter.serve.server import check_ports, instance_plan


def _stop_and_check_no_orphans(sp, sig: int, process_tree, is_running) -> None:
    children = process_tree(sp.proc.pid)
    assert any("tritonserver" in _cmdline(p) for p in children), "no tritonserver child found"
    rc = sp.stop(sig)
    assert rc == 0, sp.output()
    assert f"stopped ({signal.Signals(sig).name}), drained" in "".join(sp.stderr)
    deadline = time.monotonic() + 15
    while any(is_running(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {p: _cmdline(p) for p in children if is_running(p)}
    assert not left, f"processes outlived tlx serve: {left}"
    with socket.socket() as s:  # the port is free again (no listener)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", sp.http_port))
        s.listen()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sigterm_drains_stops_and_leaves_no_process(
    onnx_run: Path, start_server, process_tree, is_running
) -> None:
    sp = start_server(onnx_run, "--max-batch", "16")
    sp.wait_ready()
    with TritonHttpClient(sp.url) as c:
        assert c.ready("vgg16")
    # A big batch is sent before SIGTERM and answered after it: the server drains.
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [16, 3, 32, 32],
                    "datatype": "FP32",
                    "data": [0.0] * (16 * 3 * 32 * 32),
                }
            ]
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", sp.http_port, timeout=120)
    conn.request("POST", "/v2/models/vgg16/infer", body=body)  # sent; answer not read yet
    answers: list[object] = []

    def read_answer() -> None:
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())["outputs"][0]["shape"]))
        conn.close()  # as a client does when it is done (an open one holds Triton's stop)

    reader = threading.Thread(target=read_answer)
    reader.start()
    _stop_and_check_no_orphans(sp, signal.SIGTERM, process_tree, is_running)
    reader.join(timeout=60)
    conn.close()
    assert answers == [(200, [16, 10])]


def test_an_idle_client_connection_holds_the_stop_only_until_the_drain_timeout(
    onnx_run: Path, start_server
) -> None:
    sp = start_server(onnx_run, "--drain-timeout", "2", "--instances", "1")
    sp.wait_ready()
    idle = TritonHttpClient(sp.url)  # one answered request, then a keep-alive connection
    idle.ready("vgg16")
    try:
        began = time.monotonic()
        assert sp.stop(signal.SIGTERM) == 0, sp.output()
        took = time.monotonic() - began
    finally:
        idle.close()
    said = "".join(sp.stderr)
    assert "when the 2 s --drain-timeout ran out: 1 client connection(s) still open" in said
    assert took < 30, f"the stop took {took:.0f} s with --drain-timeout 2"


def test_drain_shortfall_reads_tritons_own_count() -> None:
    late = (
        'I1201 server.cc:305] "Timeout 2: Found 1 HTTP service connections"\n'
        'I1201 http_server.cc:248] "Timeout 1: Found 3 HTTP service connections"\n'
        'I1201 server.cc:321] "Timeout 0: Found 0 model versions that have in-flight inferences"\n'
        'E1201 main.cc:535] "failed to stop server: Internal - Exit timeout expired. Exiting '
        'immediately."\n'
    )
    assert drain_shortfall(late) == "3 client connection(s) still open"
    busy = late.replace("Found 0 model versions", "Found 2 model versions")
    assert drain_shortfall(busy).endswith("2 inference(s) still in flight")
    assert drain_shortfall(late.split("E1201")[0]) is None  # stopped in time


@pytest.mark.slow
def test_sigint_drains_stops_and_leaves_no_process(
    onnx_run: Path, start_server, process_tree, is_running
) -> None:
    sp = start_server(onnx_run, "--instances", "2", "--model-name", "clf")
    sp.wait_ready()
    with TritonHttpClient(sp.url) as c:
        assert c.model("clf").instances == 2
    _stop_and_check_no_orphans(sp, signal.SIGINT, process_tree, is_running)


def test_port_in_use_is_exit_3_naming_the_port(onnx_run: Path, serve_available, ports) -> None:
    http, grpc, metrics = ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc))
        taken.listen()
        result = CliRunner().invoke(
            app,
            [
                "serve",
                str(onnx_run),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc),
                "--metrics-port",
                str(metrics),
            ],
        )
    assert result.exit_code == 3, result.output
    assert f"--grpc-port {grpc}" in result.output and "already in use" in result.output
    assert "Traceback" not in result.output


def test_missing_pytriton_is_exit_3_with_the_fix(onnx_run: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pytriton", None)
    monkeypatch.setitem(sys.modules, "pytriton.triton", None)
    result = CliRunner().invoke(app, ["serve", str(onnx_run), "--http-port", "18999"])
    assert result.exit_code == 3, result.output
    assert "nvidia-pytriton" in result.output and "pip install" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http-port", "0"], "--http-port 0"),
        (["--http-port", "9000", "--grpc-port", "9000"], "must differ"),
        (["--model-name", "a/b"], "--model-name"),
        (["--max-batch", "0"], "--max-batch"),
        (["--instances", "0"], "--instances"),
        (["--max-queue-delay-us", "-1"], "--max-queue-delay-us"),
    ],
)
def test_bad_options_are_exit_2(onnx_run: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["serve", str(onnx_run), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_unknown_variant_is_exit_2_before_any_server_starts(
    onnx_run: Path, serve_available, ports
) -> None:
    http, grpc, metrics = ports(3)
    result = CliRunner().invoke(
        app,
        [
            *("serve", str(onnx_run), "--variant", "nope", "--http-port", str(http)),
            *("--grpc-port", str(grpc), "--metrics-port", str(metrics)),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "nope" in result.output


@pytest.mark.parametrize(
    ("given", "cores", "plan"),
    [
        ({}, 2, (2, 1)),  # two instances split the cores (measured faster: RESULTS.md)
        ({}, 16, (2, 8)),
        ({}, 1, (1, 1)),
        ({"instances": 4}, 2, (4, 1)),  # never oversubscribed below one thread each
        ({"instances": 3}, 12, (3, 4)),
        ({"threads": 3}, 8, (2, 3)),  # what the user gives is kept
        ({"instances": 1, "threads": 2}, 8, (1, 2)),
        ({"device": "cuda"}, 8, (1, None)),  # one instance per GPU, the runtime's threads
        ({"device": "cuda:1", "instances": 2}, 8, (2, None)),
    ],
)
def test_instance_plan_splits_the_cores_on_cpu(given: dict, cores: int, plan: tuple) -> None:
    assert instance_plan(ServeConfig(**given), cores) == plan


def test_check_ports_refuses_a_foreign_host_address() -> None:
    with pytest.raises(UsageError, match="--host"):
        check_ports(ServeConfig(host="203.0.113.7", http_port=18001, grpc_port=18002))


def test_check_ports_names_the_busy_port(ports) -> None:
    http, grpc, metrics = ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics))
        taken.listen()
        cfg = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)
        with pytest.raises(EnvironmentUnavailable, match=f"--metrics-port {metrics}"):
            check_ports(cfg)

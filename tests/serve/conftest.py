"""Fixtures for serving tests: a real `tlx serve` process on free loopback ports.

One server at a time (PyTriton's advice): the module-scoped server of test_server.py is
stopped before test_lifecycle.py starts its own.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc's children lists)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class ServeProcess:
    """A `tlx serve` child process and what it printed."""

    proc: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    metrics_port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(line.startswith("ready:") for line in self.stdout):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"tlx serve did not become ready (rc {self.proc.returncode}):\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.proc.pid):
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _pump(stream, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def start_serve(run: Path, *extra: str, ports: Callable[[int], list[int]]) -> ServeProcess:
    """Start `tlx serve RUN` on free ports with this checkout's package; not yet ready."""
    http, grpc, metrics = ports(3)
    cmd = [
        sys.executable,
        "-m",
        "exporter",
        "serve",
        str(run),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    sp = ServeProcess(proc, http, grpc, metrics)
    for stream, sink in ((proc.stdout, sp.stdout), (proc.stderr, sp.stderr)):
        threading.Thread(target=_pump, args=(stream, sink), daemon=True).start()
    return sp


@pytest.fixture(scope="session")
def serve_available() -> None:
    """Skip (with the reason) where PyTriton's tritonserver cannot run: not Linux, or absent."""
    if not sys.platform.startswith("linux"):
        pytest.skip("nvidia-pytriton ships tritonserver for Linux only")
    pytest.importorskip(
        "pytriton", reason="nvidia-pytriton is not installed (pip install tlx[serve])"
    )


@pytest.fixture(scope="session")
def process_tree() -> Callable[[int], set[int]]:
    """``process_tree(pid)``: every process below pid."""
    return descendants


@pytest.fixture(scope="session")
def is_running() -> Callable[[int], bool]:
    """``is_running(pid)``: the process exists and is not a zombie."""
    return alive


@pytest.fixture(scope="session")
def start_server(serve_available: None, ports) -> Callable[..., ServeProcess]:
    return functools.partial(start_serve, ports=ports)


@pytest.fixture(scope="module")
def served(onnx_run: Path, serve_available: None, ports) -> Iterator[ServeProcess]:
    """One ready server of ``onnx_run`` for a module; a 5 ms queue delay makes batches form."""
    sp = start_serve(onnx_run, "--max-batch", "16", "--max-queue-delay-us", "5000", ports=ports)
    sp.wait_ready()
    yield sp
    sp.stop()

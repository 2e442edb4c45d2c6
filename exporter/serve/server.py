"""``tlx serve``: a real Triton Inference Server in front of the run's predictor.

The ``nvidia-pytriton`` package bundles tritonserver with only the Python backend, so the
model runs in this process: Triton does HTTP/gRPC (KServe v2), validation of every request
against the model config (name, datatype, shape: a bad request is a 400 that never reaches
the model), dynamic batching, statistics and metrics, and hands each formed batch to a bound
callable that calls :meth:`Predictor.logits` (the runtime registry's ``Runtime.infer``).

Order of start-up, so that a served model is a warm one: ports checked free, one predictor
per instance loaded and warmed at batch 1 and ``max_batch``, tritonserver started, the
model bound; then one request through the server must give the in-process logits before
:func:`start_server` returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import ServeConfig
from exporter.core.errors import EnvironmentUnavailable, GateFailed, Interrupted, UsageError
from exporter.serve.client import (
    INPUT_NAME,
    OUTPUT_NAME,
    PARAM_ARTIFACT,
    PARAM_PRECISION,
    PARAM_RUNTIME,
    PARAM_SHA256,
    TritonHttpClient,
)

if TYPE_CHECKING:
    from exporter.serve.predictor import Predictor

STARTUP_TIMEOUT_S = 180.0
PYTRITON_FIX = "install it with: pip install 'tlx[serve]' (nvidia-pytriton, Linux only)"


@dataclass
class RunningServer:
    """A started server: its endpoints, what it serves, and how to stop it."""

    launcher: _Launcher
    predictors: list[Predictor]
    config: ServeConfig
    self_check_max_abs: float = float("nan")
    _stopped: bool = False

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.config.host)}:{self.config.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{_url_host(self.config.host)}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.config.host)}:{self.config.metrics_port}/metrics"

    def describe(self) -> dict[str, Any]:
        p = self.predictors[0]
        return {
            "model_name": self.config.model_name,
            "artifact": p.artifact.name,
            "sha256": p.artifact.sha256,
            "precision": p.artifact.precision,
            "runtime": p.runtime_name,
            "image_size": p.image_size,
            "classes": len(p.classes),
            "instances": len(self.predictors),
            "max_batch": self.config.max_batch,
            "max_queue_delay_us": self.config.max_queue_delay_us,
            "http": self.http_url,
            "grpc": self.grpc_address,
            "metrics": self.metrics_url,
            "self_check_max_abs": self.self_check_max_abs,
        }

    def alive(self) -> bool:
        return not self._stopped and bool(self.launcher.triton.is_alive())

    def failure(self) -> str:
        """Why the server is no longer alive, from the tail of its log."""
        return self.launcher.log_tail() or "tritonserver exited"

    def stop(self) -> None:
        """Drain in-flight requests (up to ``drain_timeout_s``), stop tritonserver, clean up."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.launcher.stop()
        finally:
            for p in self.predictors:
                p.close()


def start_server(
    run: str | Path, cfg: ServeConfig, *, stop: threading.Event | None = None
) -> RunningServer:
    """Load, warm up and serve the run's chosen artifact; return once it answers correctly.

    Args:
        run: the run folder.
        cfg: what to serve and where.
        stop: set it (e.g. from a signal handler) to abandon a start-up in progress.

    Raises:
        EnvironmentUnavailable: nvidia-pytriton missing, a port in use, tritonserver or the
            model failed to start (exit 3; the message carries the server's reason).
        UsageError / InputFileError / RuntimeUnavailable: from choosing or loading the artifact.
        GateFailed: the server's answer differs from the in-process logits beyond the
            artifact's tolerance profile.
    """
    triton_mod = _import_pytriton()
    check_ports(cfg)
    predictors = _load_predictors(run, cfg)
    launcher = None
    try:
        log_dir = Path(tempfile.mkdtemp(prefix="tlx-serve-"))
        launcher = _Launcher(_bind(triton_mod, predictors, cfg, log_dir / "tritonserver.log"))
        launcher.log_dir = log_dir
        with _libpython_on_library_path():
            launcher.start(stop or threading.Event())
        server = RunningServer(launcher, predictors, cfg)
        server.self_check_max_abs = _self_check(server)
        return server
    except BaseException:
        if launcher is not None:
            launcher.stop()
        for p in predictors:
            p.close()
        raise


def wait_until_stopped(
    server: RunningServer, stop: threading.Event, *, poll_s: float = 0.5
) -> None:
    """Block until ``stop`` is set (then drain and stop) or the server dies.

    Raises:
        EnvironmentUnavailable: tritonserver or the model's proxy exited on its own.
    """
    while not stop.wait(poll_s):
        if not server.alive():
            reason = server.failure()
            server.stop()
            raise EnvironmentUnavailable(f"the Triton server stopped by itself: {reason}")
    server.stop()


# --- checks before anything starts --------------------------------------------------------


def _import_pytriton() -> Any:
    if not sys.platform.startswith("linux"):
        raise EnvironmentUnavailable(
            f"tlx serve needs Linux: nvidia-pytriton ships tritonserver for Linux only "
            f"(this is {sys.platform}); use the Triton container with `tlx export --format triton`"
        )
    try:
        import pytriton.triton as triton_mod
    except ImportError as exc:
        raise EnvironmentUnavailable(
            f"tlx serve needs nvidia-pytriton ({exc}); {PYTRITON_FIX}"
        ) from exc
    return triton_mod


def check_ports(cfg: ServeConfig) -> None:
    """Every port must be free on ``cfg.host`` (tritonserver would otherwise die at start-up).

    Raises:
        EnvironmentUnavailable: a port is taken or not allowed (exit 3).
        UsageError: the host is not an address of this machine.
    """
    for flag, port in (
        ("--http-port", cfg.http_port),
        ("--grpc-port", cfg.grpc_port),
        ("--metrics-port", cfg.metrics_port),
    ):
        try:
            infos = socket.getaddrinfo(cfg.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UsageError(f"--host {cfg.host!r}: not a resolvable address ({exc})") from exc
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise EnvironmentUnavailable(
                        f"{flag} {port}: {cfg.host}:{port} is already in use (another server?); "
                        f"stop it or pick another port with {flag}"
                    ) from exc
                if exc.errno == errno.EACCES:
                    raise EnvironmentUnavailable(
                        f"{flag} {port}: binding {cfg.host}:{port} is not permitted (ports below "
                        f"1024 need privileges); pick another port with {flag}"
                    ) from exc
                raise UsageError(
                    f"--host {cfg.host!r}: cannot bind {cfg.host}:{port} ({exc.strerror}); "
                    "give an address of this machine"
                ) from exc


@contextlib.contextmanager
def _libpython_on_library_path() -> Iterator[None]:
    """Put this interpreter's libpython first on the server's library path.

    PyTriton's Python-backend stub links ``libpython3.X.so.1.0`` dynamically. Without this, a
    pyenv/conda interpreter's stub picks up the system's libpython of the same minor version
    and fails in model init ("'_thread.RLock' object has no attribute '_recursion_count'").
    tritonserver copies the environment when it starts, so the change is undone afterwards.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not libdir or not (Path(libdir) / f"libpython{version}.so.1.0").exists():
        yield  # a static interpreter: the stub's own lookup is all there is
        return
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = libdir + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = old


# --- the model ----------------------------------------------------------------------------


def _load_predictors(run: str | Path, cfg: ServeConfig) -> list[Predictor]:
    """One predictor (own session) per instance, each warmed at batch 1 and ``max_batch``."""
    from exporter.serve.predictor import load

    predictors: list[Predictor] = []
    try:
        for _ in range(cfg.instances):
            p = load(
                run,
                runtime=cfg.runtime,
                variant=cfg.variant,
                device=cfg.device,
                threads=cfg.threads,
            )
            predictors.append(p)
            for b in sorted({1, cfg.max_batch}):
                p.logits(np.zeros((b, 3, p.image_size, p.image_size), dtype=np.float32))
    except BaseException:
        for p in predictors:
            p.close()
        raise
    return predictors


def _infer_function(predictor: Predictor) -> Callable[..., dict[str, np.ndarray]]:
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT_NAME: predictor.logits(inputs[INPUT_NAME])}

    return infer


def _bind(triton_mod: Any, predictors: list[Predictor], cfg: ServeConfig, log_file: Path) -> Any:
    """A configured (not yet started) ``pytriton.triton.Triton`` with the model bound."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    first = predictors[0]
    size = first.image_size
    config = triton_mod.TritonConfig(
        http_address=cfg.host,
        http_port=cfg.http_port,
        grpc_address=cfg.host,
        grpc_port=cfg.grpc_port,
        metrics_address=cfg.host,
        metrics_port=cfg.metrics_port,
        exit_timeout_secs=cfg.drain_timeout_s,
        log_file=log_file,  # stdout stays for the `ready` line
        allow_gpu_metrics=cfg.device != "cpu",
    )
    # PyTriton guards these endpoints with a token; statistics stay open because the load
    # test reads the batcher's figures from them (they reveal counts and times, nothing else).
    restricted = [e for e in triton_mod.DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    triton = triton_mod.Triton(
        config=config,
        security_config=triton_mod.TritonSecurityConfig(restricted_endpoints=restricted),
    )
    triton.bind(
        model_name=cfg.model_name,
        infer_func=[_infer_function(p) for p in predictors],
        inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(3, size, size))],
        outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(len(first.classes),))],
        config=ModelConfig(
            max_batch_size=cfg.max_batch,
            batcher=DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us),
        ),
        strict=True,
    )
    _name_artifact(triton, cfg.model_name, first)
    return triton


def _name_artifact(triton: Any, model_name: str, predictor: Predictor) -> None:
    """Put the artifact's name and hash into the model config's ``parameters``.

    PyTriton's public ModelConfig has no ``parameters``; its generated config carries the
    backend parameters of the model, which Triton reports at ``/v2/models/<m>/config``.
    Clients use them to refuse comparing against a different file.
    """
    art = predictor.artifact
    params = {
        PARAM_ARTIFACT: art.name,
        PARAM_SHA256: art.sha256 or "",
        PARAM_PRECISION: art.precision,
        PARAM_RUNTIME: predictor.runtime_name,
    }
    for model in triton._model_manager.models:  # PyTriton 0.7's model registry
        if model.model_name == model_name:
            model._get_triton_model_config().backend_parameters.update(params)


class _Launcher:
    """Starts tritonserver on its own thread, which then lives as long as the server.

    PyTriton starts tritonserver with ``PR_SET_PDEATHSIG``, which fires when the *thread* that
    forked it ends: a thread that returned after start-up would take the server down with it
    (and the main thread is busy watching for a dead server and for signals meanwhile).
    Because the launcher thread lives until :meth:`release`, a crash of this process still
    stops tritonserver, so no server outlives tlx.
    """

    def __init__(self, triton: Any) -> None:
        self.triton = triton
        self.log_dir: Path | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tlx-triton", daemon=True)

    def _main(self) -> None:
        try:
            self.triton.run()
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self.started.set()
        self._release.wait()

    def start(self, stop: threading.Event) -> None:
        """Start the server and load the model; fail fast when the server process dies."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.started.wait(0.2):
            if stop.is_set():
                signum = int(getattr(stop, "signum", 15))
                raise Interrupted("tlx serve was stopped during start-up", signum=signum)
            if _server_exited(self.triton):
                raise EnvironmentUnavailable(f"tritonserver exited at start-up: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise EnvironmentUnavailable(
                    f"the Triton server was not ready after {STARTUP_TIMEOUT_S:.0f} s: "
                    f"{self.log_tail() or 'no log'}"
                )
        if self.error is not None:
            raise EnvironmentUnavailable(
                _startup_reason(self.error, self.log_tail())
            ) from self.error

    def log_tail(self, lines: int = 3) -> str:
        """The server's last error lines (Triton prefixes them with ``E``), else its last lines."""
        log = self.log_dir / "tritonserver.log" if self.log_dir else None
        try:
            text = log.read_text(encoding="utf-8", errors="replace")[-65536:] if log else ""
        except OSError:
            text = ""
        all_lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in all_lines if line.startswith("E")]
        return " | ".join((errors or all_lines)[-lines:])

    def stop(self) -> None:
        """Stop tritonserver (Triton drains in-flight requests first), then end the thread."""
        try:
            with contextlib.suppress(Exception):
                self.triton.stop()
        finally:
            self._release.set()
            self._thread.join(timeout=5)
            if self.log_dir is not None:
                shutil.rmtree(self.log_dir, ignore_errors=True)


def _startup_reason(error: BaseException, log_tail: str) -> str:
    text = " ".join(str(error).split())
    if "_recursion_count" in text:
        libdir = sysconfig.get_config_var("LIBDIR")
        return (
            "the model failed to initialise in Triton's Python-backend stub: it loaded a libpython "
            f"other than this interpreter's ({sys.executable}, {libdir}); use a Python built "
            "with --enable-shared whose LIBDIR holds libpython"
        )
    return f"the Triton server failed to start: {error.__class__.__name__}: {text[:400]}" + (
        f" (server log: {log_tail})" if log_tail else ""
    )


def _server_exited(triton: Any) -> bool:
    server = getattr(triton, "_triton_server", None)  # PyTriton 0.7's process wrapper
    running = getattr(server, "_tritonserver_running_cmd", None)
    return running is not None and not server.is_alive()


def _self_check(server: RunningServer) -> float:
    """One request through the server must give the in-process logits (profile-judged)."""
    from exporter.verify.tolerance import compare, gate, profile_for

    p = server.predictors[0]
    x = np.random.default_rng(0).standard_normal((2, 3, p.image_size, p.image_size), np.float32)
    with TritonHttpClient(server.http_url) as client:
        try:
            served = client.infer(server.config.model_name, x)
        except Exception as exc:
            raise EnvironmentUnavailable(
                f"the Triton server started but its first request failed: {exc}"
            ) from exc
    local = p.logits(x)
    max_abs = float(np.max(np.abs(served - local)))
    tol = profile_for(p.artifact.precision)
    verdict = gate(compare(local, served, tol), tol)
    if not verdict.passed:
        raise GateFailed(
            f"served logits differ from in-process {p.runtime_name} on {p.artifact.name}: "
            f"{'; '.join(verdict.failures)}"
        )
    return max_abs


def _url_host(host: str) -> str:
    # A wildcard bind is reached through loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host

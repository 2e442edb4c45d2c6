"""Starting tritonserver through nvidia-pytriton, and the quirks of doing so.

PyTriton 0.7 bundles tritonserver 2.51 with only the Python backend: the model runs in this
process, in a callable bound per instance (:func:`bind`). What needs care, each handled here:
the stub's libpython (:func:`libpython_on_library_path`), the thread that starts the server
(:class:`Launcher`), where the server's log goes, and the model config's ``parameters``
that name the served file (:func:`_name_artifact`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import ServeConfig
from exporter.core.errors import EnvironmentUnavailable, Interrupted
from exporter.serve.client import (
    INPUT_NAME,
    OUTPUT_NAME,
    PARAM_ARTIFACT,
    PARAM_PRECISION,
    PARAM_RUNTIME,
    PARAM_SHA256,
)
from exporter.serve.model_callable import infer_callable, patch_stub_model, reshape_input
from exporter.serve.reaper import (
    REPOSITORY_FILE,
    descendants,
    kill_tree,
    remove_triton_repository,
    start_time,
)

if TYPE_CHECKING:
    from exporter.serve.predictor import Predictor

STARTUP_TIMEOUT_S = 180.0
LOG_NAME = "tritonserver.log"
STUB_NAME = "triton_python_backend_stub"
PYTRITON_FIX = "install it with: pip install 'tlx[serve]' (nvidia-pytriton, Linux only)"


def import_pytriton() -> Any:
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


@contextlib.contextmanager
def libpython_on_library_path() -> Iterator[None]:
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


def bind(triton_mod: Any, predictors: list[Predictor], cfg: ServeConfig, *, folder: Path) -> Any:
    """A configured (not yet started) ``pytriton.triton.Triton`` with the model bound.

    Everything it writes goes into ``folder`` (``triton.tlx_log_dir``, created here): its log,
    ``tritonserver.log``, so stdout stays for the ``ready`` line and a failure can quote the
    server's own reason, and PyTriton's workspace (a copy of tritonserver, the sockets).
    """
    log_dir = Path(tempfile.mkdtemp(prefix="attempt-", dir=folder))
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
        log_file=log_dir / LOG_NAME,
        allow_gpu_metrics=cfg.device != "cpu",
    )
    # PyTriton guards these endpoints with a token; statistics stay open because the load
    # test reads the batcher's figures from them (they reveal counts and times, nothing else).
    restricted = [e for e in triton_mod.DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
    triton = triton_mod.Triton(
        config=config,
        workspace=log_dir / "pytriton",
        security_config=triton_mod.TritonSecurityConfig(restricted_endpoints=restricted),
    )
    triton.bind(
        model_name=cfg.model_name,
        # One response per request: a malformed request fails alone (model_callable.py).
        infer_func=[infer_callable(p, max_batch=cfg.max_batch) for p in predictors],
        inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(3, size, size))],
        outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(len(first.classes),))],
        config=ModelConfig(
            max_batch_size=cfg.max_batch,
            batcher=DynamicBatcher(max_queue_delay_microseconds=cfg.max_queue_delay_us),
        ),
        # Not strict: PyTriton's output check would refuse the per-request error entries.
        strict=False,
    )
    patch_stub_model(triton, cfg.model_name)
    reshape_input(triton, cfg.model_name, size)
    _name_artifact(triton, cfg.model_name, first)
    triton.tlx_log_dir = log_dir
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


class Launcher:
    """Starts tritonserver on its own thread, which then lives as long as the server.

    PyTriton starts tritonserver with ``PR_SET_PDEATHSIG``, which fires when the *thread* that
    forked it ends: a thread that returned after start-up would take the server down with it
    (and the main thread is busy watching for a dead server and for signals meanwhile).
    Because the launcher thread lives until :meth:`release`, a crash of this process still
    stops tritonserver, so no server outlives tlx.
    """

    def __init__(self, triton: Any, on_process: Callable[[int], None]) -> None:
        self.triton = triton
        self.on_process = on_process  # told each process of the server's, once
        self._reported: set[int] = set()
        self.log_dir: Path = triton.tlx_log_dir  # bind's
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
            self._report_processes()
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
        self._report_processes()
        if self.error is not None:
            raise EnvironmentUnavailable(
                _startup_reason(self.error, self.log_tail())
            ) from self.error

    def terminate(self, grace_s: float) -> None:
        """SIGINT tritonserver (it drains), and SIGKILL its tree if it still runs after grace_s."""
        pid = self.server_pid()
        started = start_time(pid) if pid else None
        if pid is None or started is None:
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_tree(pid, started)

    def server_pid(self) -> int | None:
        server = getattr(self.triton, "_triton_server", None)  # PyTriton 0.7's process wrapper
        running = getattr(server, "_tritonserver_running_cmd", None)
        return getattr(running, "pid", None)

    def stubs(self) -> dict[int, list[str]]:
        """The Python-backend stub processes (one per model instance): pid → command line.

        The stub's arguments (python_backend's): ``argv[1]`` is the model file in Triton's copy
        of the repository, ``argv[9]`` the instance's name (e.g. ``vgg16_0_1``).
        """
        pid = self.server_pid()
        found = {}
        for child in descendants(pid) if pid else []:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
            except (OSError, UnicodeDecodeError):
                continue
            if argv[0].endswith(STUB_NAME) and len(argv) > 9:
                found[child] = argv
        return found

    def _report_processes(self) -> None:
        stubs = self.stubs()
        if stubs and not (self.log_dir / REPOSITORY_FILE).exists():
            # Triton copies the model into /tmp/folderXXXXXX: recorded, so that whoever cleans
            # up after a killed tlx (reaper.py) deletes it too.
            repository = Path(next(iter(stubs.values()))[1]).parent.parent
            (self.log_dir / REPOSITORY_FILE).write_text(str(repository))
        for pid in [self.server_pid() or 0, *stubs]:
            if pid and pid not in self._reported:
                self._reported.add(pid)
                self.on_process(pid)

    def log_tail(self, lines: int = 3) -> str:
        """The server's last error lines (Triton prefixes them with ``E``), else its last lines."""
        text = self._log_text()
        all_lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in all_lines if line.startswith("E")]
        return " | ".join((errors or all_lines)[-lines:])

    def stop(self) -> str | None:
        """Stop tritonserver (Triton drains in-flight requests first), then end the thread.

        Returns:
            None when Triton stopped within the drain timeout, else why it did not (from its
            log): Triton 2.51 also waits for clients to close their HTTP connections, so an
            idle keep-alive connection holds the stop for the whole ``--drain-timeout``.
        """
        try:
            with contextlib.suppress(Exception):
                self.triton.stop()
        finally:
            self._release.set()
            self._thread.join(timeout=5)
            late = drain_shortfall(self._log_text())
            remove_triton_repository(self.log_dir)
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return late

    def _log_text(self) -> str:
        try:
            return (self.log_dir / LOG_NAME).read_text(encoding="utf-8", errors="replace")[-65536:]
        except OSError:
            return ""


def drain_shortfall(log: str) -> str | None:
    """Why Triton's stop hit its exit timeout, from its log; None if it did not.

    Triton logs once a second what it still waits for ("Timeout N: Found K HTTP service
    connections", "... model versions that have in-flight inferences") and, when time is up,
    "Exit timeout expired. Exiting immediately."
    """
    if "Exit timeout expired" not in log:
        return None
    waits = {
        "client connection(s) still open": r"Found (\d+) \w* ?service connections",
        "inference(s) still in flight": r"Found (\d+) model versions that have in-flight",
    }
    found = []
    for what, pattern in waits.items():
        counts = re.findall(pattern, log)
        if counts and int(counts[-1]):
            found.append(f"{counts[-1]} {what}")
    return ", ".join(found) or "Triton's exit timeout expired"


# How a lost start-up handshake between PyTriton's processes reads (pytriton #109): a timeout
# waiting for the first stub's socket, a refused or empty connection to it.
HANDSHAKE_MARKERS = (
    "Timeout occurred while waiting for config file",
    "get_config_from_handshake_server",
    "Invalid JSON response from the server",
)


def handshake_race(exc: BaseException) -> bool:
    """True when a failed start lost the start-up handshake race (a fresh start may win)."""
    texts = [str(exc)]
    cause = exc.__cause__
    if cause is not None:
        texts.append(str(cause))
        texts += [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    return any(marker in text for marker in HANDSHAKE_MARKERS for text in texts)


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

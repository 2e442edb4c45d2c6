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

import errno
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporter.core.choices import CUDA, device_kind
from exporter.core.config import ServeConfig, TritonConfig
from exporter.core.errors import EnvironmentUnavailable, GateFailed, UsageError
from exporter.core.machine import usable_cpus
from exporter.serve.client import TritonHttpClient
from exporter.serve.launch import (
    Launcher,
    bind,
    handshake_race,
    import_pytriton,
    libpython_on_library_path,
)
from exporter.serve.reaper import Reaper, clean_stale_workspaces, new_workspace, start_time

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.serve.predictor import Predictor

# With several instances, PyTriton's stubs start in parallel and every instance but the first
# (and tlx's side) waits only 1 s for the first one's handshake socket (pytriton #109): on a
# busy machine the load fails (launch.py: handshake_race). A fresh start usually wins the race.
STARTUP_ATTEMPTS = 4
WARMUP_MAX_BATCH = 64
# After a model instance died, how long the other one may finish what it has in flight.
DEAD_INSTANCE_GRACE_S = 5.0


@dataclass
class RunningServer:
    """A started server: its endpoints, what it serves, and how to stop it."""

    launcher: Launcher
    predictors: list[Predictor]
    config: ServeConfig
    self_check_max_abs: float = float("nan")
    workspace: Path | None = None
    reaper: Reaper | None = None
    # The backend stub of every model instance: pid → (instance name, start time).
    instances: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    _stopped: bool = False

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.config.host)}:{self.config.http_port}"

    def ready_line(self, *, tuned: bool = False) -> str:
        """``tlx serve``'s one line once warm (``tuned``: settings from RUN/tune.json)."""
        p, host, c = self.predictors[0], _url_host(self.config.host), self.config
        return (
            f"ready: model {c.model_name!r} = {p.artifact.name} on {p.runtime_name} "
            f"(x{len(self.predictors)}, {p.runtime.threads or 'default'} thread(s) each, "
            f"max batch {c.max_batch}, queue delay {c.max_queue_delay_us} us"
            f"{', tuned: RUN/tune.json' if tuned else ''}); HTTP {self.http_url}, "
            f"gRPC {host}:{c.grpc_port}, metrics http://{host}:{c.metrics_port}/metrics; "
            f"served == in-process (max abs {self.self_check_max_abs:g})"
        )

    def alive(self) -> bool:
        if self._stopped or self.dead_instances():
            return False
        return bool(self.launcher.triton.is_alive())

    def dead_instances(self) -> list[str]:
        """The model instances whose backend stub process is gone (e.g. killed, OOM)."""
        return [
            f"{name} (backend stub pid {pid})"
            for pid, (name, started) in self.instances.items()
            if start_time(pid) != started
        ]

    def failure(self) -> str:
        """Why the server is no longer alive: a dead instance, else the tail of its log."""
        dead = self.dead_instances()
        if dead:
            return (
                f"model instance {', '.join(dead)} died, so Triton would fail every request "
                "it routes there; stopped serving so that a supervisor restarts tlx serve"
            )
        return self.launcher.log_tail() or "tritonserver exited"

    def stop(self) -> str | None:
        """Drain in-flight requests (up to ``drain_timeout_s``), stop tritonserver, clean up.

        Returns:
            None when the drain finished in time, else what was still open when it ran out
            (see :func:`exporter.serve.launch.drain_shortfall`).
        """
        if self._stopped:
            return None
        if self.dead_instances():  # Triton's drain would wait for what the dead one held
            self.launcher.terminate(min(DEAD_INSTANCE_GRACE_S, self.config.drain_timeout_s))
        self._stopped = True
        try:
            return self.launcher.stop()
        finally:
            _release(self.predictors, self.workspace, self.reaper)


def start_server(
    run: Run | str | Path, cfg: ServeConfig, *, stop: threading.Event | None = None
) -> RunningServer:
    """Load, warm up and serve the run's chosen artifact; return once it answers correctly.

    Args:
        run: the run folder, or the opened run (every instance's predictor shares it).
        stop: set it (e.g. from a signal handler) to abandon a start-up in progress.

    Raises:
        EnvironmentUnavailable: nvidia-pytriton missing, a port in use, tritonserver or the
            model failed to start (exit 3; the message carries the server's reason).
        UsageError / InputFileError / RuntimeUnavailable: from choosing or loading the artifact.
        GateFailed: the server's answer differs from the in-process logits beyond the
            artifact's tolerance profile.
    """
    from exporter.core.runfolder import open_run

    if cfg.public_key is not None:
        from exporter.sign.verification import verified_run

        run = verified_run(run, cfg.public_key)  # before any file of the run is opened
    run = open_run(run)  # a bad run folder is exit 2 before any environment check
    triton_mod = import_pytriton()
    check_ports(cfg)
    predictors = _load_predictors(run, cfg)
    launcher = workspace = reaper = None
    try:
        clean_stale_workspaces()  # of earlier starts that were killed
        workspace = new_workspace()
        reaper = Reaper()
        reaper.watch_folder(workspace)
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            triton = bind(triton_mod, predictors, cfg, folder=workspace)
            launcher = Launcher(triton, on_process=reaper.watch_process)
            try:
                with libpython_on_library_path():
                    launcher.start(stop or threading.Event())
                break
            except EnvironmentUnavailable as exc:
                launcher.stop()
                launcher = None
                if attempt == STARTUP_ATTEMPTS or not handshake_race(exc):
                    raise
                time.sleep(attempt)  # let a busy machine settle before the next try
        instances = {pid: (argv[9], start_time(pid)) for pid, argv in launcher.stubs().items()}
        server = RunningServer(
            launcher, predictors, cfg, workspace=workspace, reaper=reaper, instances=instances
        )
        server.self_check_max_abs = _self_check(server)
        return server
    except BaseException:
        if launcher is not None:
            launcher.stop()
        _release(predictors, workspace, reaper)
        raise


def _release(predictors: list[Predictor], workspace: Path | None, reaper: Reaper | None) -> None:
    """Close the predictors, delete this start's folder and let the reaper go: nothing is
    left for it to clean."""
    for p in predictors:
        p.close()
    if workspace is not None:
        shutil.rmtree(workspace, ignore_errors=True)
    if reaper is not None:
        reaper.close()


def wait_until_stopped(server: RunningServer, stop: threading.Event) -> str | None:
    """Block until ``stop`` is set (then drain and stop) or the server dies.

    Returns:
        What :meth:`RunningServer.stop` returns: None when the drain finished in time.

    Raises:
        EnvironmentUnavailable: tritonserver or the model's proxy exited on its own.
    """
    while not stop.wait(0.5):  # a dead server is noticed within half a second
        if not server.alive():
            reason = server.failure()
            server.stop()
            raise EnvironmentUnavailable(f"the Triton server stopped by itself: {reason}")
    return server.stop()


# --- checks before anything starts --------------------------------------------------------


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
            # As tritonserver binds: a port whose old connections linger in TIME_WAIT is free;
            # one with a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


# --- the model ----------------------------------------------------------------------------


def instance_plan(cfg: TritonConfig, cores: int | None = None) -> tuple[int, int | None]:
    """How many model instances to run and how many intra-op threads each gets.

    On the CPU the default is two instances that split the cores: while one computes a batch,
    the other's batch crosses Triton's IPC, so the cores do not wait for it. Measured on 2 cores
    with single-image requests, three interleaved rounds (benchmarks/RESULTS.md): 2 instances x
    1 thread served a median 0.87x of in-process ORT, 1 x 2 threads 0.67x. Each instance holds
    its own copy of the model (twice the memory). Given ``--instances`` alone, the cores are
    still split, not oversubscribed (ORT's default is every core per session).
    On CUDA: one instance, the runtime's own threads.
    """
    if device_kind(cfg.device) == CUDA:
        return cfg.instances or 1, cfg.threads
    if cores is None:  # the cores this process may use (a container's cpuset and quota)
        cores = usable_cpus()
    instances = cfg.instances or (2 if cores >= 2 else 1)
    return instances, cfg.threads or max(1, cores // instances)


def _load_predictors(run: Run, cfg: ServeConfig) -> list[Predictor]:
    """One predictor (own session) per instance, each warmed at batch 1 and ``max_batch``.

    (At most :data:`WARMUP_MAX_BATCH`: ORT has no per-shape compilation to warm, and a
    65,536-image warm-up would only exhaust memory.)
    """
    from exporter.serve.predictor import load

    instances, threads = instance_plan(cfg)
    predictors: list[Predictor] = []
    try:
        for _ in range(instances):
            p = load(
                run,
                runtime=cfg.runtime,
                variant=cfg.variant,
                device=cfg.device,
                threads=threads,
            )
            predictors.append(p)
            for b in sorted({1, min(cfg.max_batch, WARMUP_MAX_BATCH)}):
                p.logits(np.zeros((b, 3, p.image_size, p.image_size), dtype=np.float32))
    except BaseException:
        for p in predictors:
            p.close()
        raise
    return predictors


def _self_check(server: RunningServer) -> float:
    """One request through the server must give the in-process logits (profile-judged)."""
    from exporter.verify.tolerance import profile_for
    from exporter.verify.verdict import judge

    p = server.predictors[0]
    x = np.random.default_rng(0).standard_normal((2, 3, p.image_size, p.image_size), np.float32)
    with TritonHttpClient(server.http_url) as client:
        try:
            served = client.infer(server.config.model_name, x)
        except Exception as exc:
            raise EnvironmentUnavailable(
                f"the Triton server started but its first request failed: {exc}"
            ) from exc
    verdict = judge(p.logits(x), served, profile_for(p.artifact.precision))
    if not verdict.passed:
        raise GateFailed(
            f"served logits differ from in-process {p.runtime_name} on {p.artifact.name}: "
            f"{'; '.join(verdict.failures)}"
        )
    return verdict.comparison.max_abs_error


def _url_host(host: str) -> str:
    # A wildcard bind is reached through loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host

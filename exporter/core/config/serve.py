"""Settings of the served model (``TritonConfig``: ``tlx serve`` and the packaged Triton
repository share it), of ``tlx serve`` and of the load test against a server."""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.core.choices import DEVICE_HELP, device_kind
from exporter.core.config.common import MAX_BATCH_SIZE, PUBLIC_KEY_HELP, opt, parse_ints
from exporter.core.errors import UsageError, shown

# Triton's own default ports (HTTP, gRPC, metrics), so clients configured for Triton just work.
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_MODEL_NAME = "vgg16"
LOOPBACK = "127.0.0.1"
# Triton's bounds: a model name is a folder on the server (and in PyTriton's workspace).
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_INSTANCES = 64
MAX_QUEUE_DELAY_US = 10_000_000


@dataclass(frozen=True)
class TritonConfig:
    """How Triton serves the model: ``tlx serve`` (PyTriton's model config) and the packaged
    repository (``tlx export --format triton``: ``config.pbtxt``) read these same fields.

    The batcher's defaults are the measured ones: ``benchmarks/serve_bench.py`` served at max
    batch 64 and queue delay 1000 us, and ``tlx tune`` starts from them as its baseline.

    Each field's help is its option's. ``device`` also picks which verify verdict chooses the
    artifact, and the instance kind; ``max_batch`` bounds what a request may carry too.
    ``instances`` None: ``tlx serve`` splits the usable cores
    (:func:`exporter.serve.server.instance_plan`); a packaged repository, whose server's cores
    are unknown, runs one. ``threads`` None: on the CPU ``tlx serve`` splits the cores between
    the instances; a packaged repository leaves it to the backend.
    """

    model_name: str = opt(DEFAULT_MODEL_NAME, help="Name clients address the model by.")
    device: str = opt("cpu", help=f"Where the model runs: {DEVICE_HELP}")
    variant: str | None = opt(
        None, help="Artifact to serve, e.g. fold-int8 (default: the run's recommended one)."
    )
    max_batch: int = opt(
        64,
        help="Largest batch the dynamic batcher forms.",
        show_default="RUN/tune.json's plan, else 64",
    )
    max_queue_delay_us: int = opt(
        1000,
        help="How long a request may wait for others to fill a batch, us.",
        show_default="RUN/tune.json's plan, else 1000",
    )
    instances: int | None = opt(
        None,
        help="Model instances (each its own session), run in parallel (default: RUN/tune.json's "
        "plan, else 2 on a multi-core CPU, 1 on CUDA).",
    )
    threads: int | None = opt(
        None,
        help="Intra-op threads per instance (default on the CPU: RUN/tune.json's plan, else the "
        "usable cores split between the instances).",
    )

    def __post_init__(self) -> None:
        if not MODEL_NAME_RE.match(self.model_name):
            raise UsageError(
                f"--model-name {shown(self.model_name)}: use 1-64 letters, digits, '_', '.', '-' "
                "(it names a folder on the server)"
            )
        device_kind(self.device)
        if not 1 <= self.max_batch <= MAX_BATCH_SIZE:
            raise UsageError(f"--max-batch {self.max_batch}: give 1 to {MAX_BATCH_SIZE}")
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
            raise UsageError(
                f"--max-queue-delay-us {self.max_queue_delay_us}: give 0 to "
                f"{MAX_QUEUE_DELAY_US} (10 s)"
            )
        if self.instances is not None and not 1 <= self.instances <= MAX_INSTANCES:
            raise UsageError(f"--instances {self.instances}: give 1 to {MAX_INSTANCES}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")


@dataclass(frozen=True)
class ServeConfig(TritonConfig):
    """Settings of ``tlx serve``: the served model (:class:`TritonConfig`) and the server
    (validated on construction; messages name the CLI option; each field's help is its
    option's)."""

    runtime: str | None = opt(None, help="Runtime that runs it (default: ort-cpu / ort-cuda).")
    host: str = opt(LOOPBACK, help="Address to bind every endpoint to (default: loopback only).")
    http_port: int = opt(DEFAULT_HTTP_PORT, help="KServe v2 HTTP port.")
    grpc_port: int = opt(DEFAULT_GRPC_PORT, help="KServe v2 gRPC port.")
    metrics_port: int = opt(DEFAULT_METRICS_PORT, help="Prometheus metrics port.")
    drain_timeout_s: int = opt(
        30,
        flags=("--drain-timeout",),
        help="On SIGINT/SIGTERM, seconds in-flight requests may take.",
    )
    public_key: str | None = opt(None, path=True, help=PUBLIC_KEY_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port}
        ports["--metrics-port"] = self.metrics_port
        for flag, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise UsageError(f"{flag} {port}: give a port from 1 to 65535")
        if len(set(ports.values())) != len(ports):
            raise UsageError(f"{', '.join(ports)} must differ, got {list(ports.values())}")
        if self.drain_timeout_s < 1:
            raise UsageError(f"--drain-timeout {self.drain_timeout_s}: must be >= 1 second")


@dataclass(frozen=True)
class LoadtestConfig:
    """Settings of ``tlx loadtest`` (a closed-loop concurrency sweep).

    A level counts when ``stable_windows`` consecutive windows agree within
    ``stability_pct`` percent in throughput and mean latency (perf_analyzer's rule); a level
    that does not settle within ``max_windows`` (or the request/time bounds) is reported as
    unstable over its last windows. Each field's help is its option's; ``seed`` seeds the
    random input images.
    """

    server: str = opt(
        f"http://{LOOPBACK}:{DEFAULT_HTTP_PORT}",
        help="The server's HTTP URL (KServe v2), e.g. http://127.0.0.1:8000.",
    )
    model_name: str = opt(DEFAULT_MODEL_NAME, help="The served model's name.")
    concurrency: tuple[int, ...] = opt(
        (1, 2, 4, 8, 16),
        parse=lambda text: parse_ints(text, "--concurrency", "1,2,4"),
        help="Closed-loop levels: requests in flight, e.g. 1,2,4,8,16.",
    )
    request_batch: int = opt(1, help="Images per request.")
    window_s: float = opt(2.0, flags=("--window",), help="Seconds per measurement window.")
    stable_windows: int = 3
    stability_pct: float = opt(
        10.0,
        flags=("--stability",),
        help="How far (%) the last 3 windows may differ for a level to count.",
    )
    max_windows: int = opt(10, help="Windows per level before it is reported as unstable.")
    warmup_s: float = opt(
        1.0, flags=("--warmup",), help="Untimed seconds at the start of every level."
    )
    max_requests: int = opt(100_000, help="Requests per level, at most.")
    max_time_s: float = opt(
        600.0, flags=("--max-time",), help="Seconds for the whole sweep, at most."
    )
    allow_remote: bool = opt(False, help="Permit a server that is not on this machine's loopback.")
    seed: int = 0
    out_dir: str | None = opt(
        None,
        flags=("--out",),
        path=True,
        help="Folder for loadtest.json/.md/.csv/.png (default: the run folder).",
    )

    def __post_init__(self) -> None:
        if not self.concurrency or any(not 1 <= int(c) <= 1024 for c in self.concurrency):
            raise UsageError("--concurrency: give integers from 1 to 1024, e.g. 1,2,4,8,16")
        if len(set(self.concurrency)) != len(self.concurrency):
            raise UsageError("--concurrency: each level may appear only once")
        if not 1 <= self.request_batch <= MAX_BATCH_SIZE:
            raise UsageError(f"--request-batch {self.request_batch}: give 1 to {MAX_BATCH_SIZE}")
        if not self.window_s > 0:
            raise UsageError(f"--window {self.window_s}: must be > 0 seconds")
        if self.stable_windows < 1:
            raise UsageError(f"stable_windows {self.stable_windows}: must be >= 1")
        if not self.stability_pct > 0:
            raise UsageError(f"--stability {self.stability_pct}: must be > 0 percent")
        if self.max_windows < self.stable_windows:
            raise UsageError(
                f"--max-windows {self.max_windows}: must be >= {self.stable_windows} "
                "(the windows that must agree)"
            )
        if self.warmup_s < 0:
            raise UsageError(f"--warmup {self.warmup_s}: must be >= 0 seconds")
        if self.max_requests < 1:
            raise UsageError(f"--max-requests {self.max_requests}: must be >= 1")
        if not self.max_time_s > 0:
            raise UsageError(f"--max-time {self.max_time_s}: must be > 0 seconds")

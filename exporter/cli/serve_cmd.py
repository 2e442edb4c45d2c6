"""``tlx serve``: the run's chosen artifact behind a real Triton Inference Server."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from exporter.cli.app import PUBLIC_KEY_HELP, Device, app, cli_errors, console, err_console
from exporter.core.config import ServeConfig

_DEFAULTS = ServeConfig()


class StopRequest(threading.Event):
    """Set by SIGINT/SIGTERM; remembers which signal asked."""

    signum: int = signal.SIGTERM


def _on_signals(stop: StopRequest) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop.signum = signum
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@app.command("serve")
def serve_command(
    run: Annotated[Path, typer.Argument(help="The run folder (with manifest.json from export).")],
    variant: Annotated[
        str | None,
        typer.Option(
            help="Artifact to serve, e.g. fold-int8 (default: the run's recommended one)."
        ),
    ] = _DEFAULTS.variant,
    runtime: Annotated[
        str | None, typer.Option(help="Runtime that runs it (default: ort-cpu / ort-cuda).")
    ] = _DEFAULTS.runtime,
    device: Annotated[Device, typer.Option(help="Where the model runs.")] = Device(
        _DEFAULTS.device
    ),
    host: Annotated[
        str, typer.Option(help="Address to bind every endpoint to (default: loopback only).")
    ] = _DEFAULTS.host,
    http_port: Annotated[int, typer.Option(help="KServe v2 HTTP port.")] = _DEFAULTS.http_port,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port.")] = _DEFAULTS.grpc_port,
    metrics_port: Annotated[
        int, typer.Option(help="Prometheus metrics port.")
    ] = _DEFAULTS.metrics_port,
    model_name: Annotated[
        str, typer.Option(help="Name clients address the model by.")
    ] = _DEFAULTS.model_name,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Largest batch the dynamic batcher forms (default: RUN/tune.json's plan, "
            f"else {_DEFAULTS.max_batch})."
        ),
    ] = None,
    max_queue_delay_us: Annotated[
        int | None,
        typer.Option(
            help="How long a request may wait for others to fill a batch, us (default: "
            f"RUN/tune.json's plan, else {_DEFAULTS.max_queue_delay_us})."
        ),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            help="Model instances (each its own session), run in parallel "
            "(default: RUN/tune.json's plan, else 2 on a multi-core CPU, 1 on CUDA)."
        ),
    ] = _DEFAULTS.instances,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Intra-op threads per instance (default on the CPU: RUN/tune.json's plan, "
            "else the usable cores split between the instances)."
        ),
    ] = _DEFAULTS.threads,
    drain_timeout: Annotated[
        int, typer.Option(help="On SIGINT/SIGTERM, seconds in-flight requests may take.")
    ] = _DEFAULTS.drain_timeout_s,
    public_key: Annotated[Path | None, typer.Option(help=PUBLIC_KEY_HELP)] = None,
) -> None:
    """Serve the run's artifact over HTTP and gRPC (KServe v2) until SIGINT/SIGTERM.

    Prints one `ready` line once the model is warm and answered a request through the server.
    Exit codes: 0 stopped cleanly by a signal, 2 bad option or run, 3 the server cannot start
    here (nvidia-pytriton missing, a port in use) or stopped by itself (tritonserver exited,
    or a model instance's backend process died: a supervisor should restart it).
    """
    stop = StopRequest()
    _on_signals(stop)
    with cli_errors():
        from exporter.core.tuneplan import serve_settings
        from exporter.serve.server import start_server, wait_until_stopped

        given = {
            "max_batch": max_batch,
            "max_queue_delay_us": max_queue_delay_us,
            "instances": instances,
            "threads": threads,
        }
        settings, from_tune = serve_settings(
            run, given, device=device.value, variant=variant, runtime=runtime
        )
        cfg = ServeConfig(
            **{k: v for k, v in settings.items() if v is not None},
            variant=variant,
            runtime=runtime,
            device=device.value,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            model_name=model_name,
            drain_timeout_s=drain_timeout,
            public_key=str(public_key) if public_key is not None else None,
        )
        server = start_server(run, cfg, stop=stop)
        d = server.describe()
        console.print(
            f"ready: model {d['model_name']!r} = {d['artifact']} on {d['runtime']} "
            f"(x{d['instances']}, {d['threads'] or 'default'} thread(s) each, "
            f"max batch {d['max_batch']}, queue delay {d['max_queue_delay_us']} us"
            f"{', tuned: RUN/tune.json' if from_tune else ''}); "
            f"HTTP {d['http']}, gRPC {d['grpc']}, "
            f"metrics {d['metrics']}; served == in-process (max abs {d['self_check_max_abs']:g})",
            markup=False,
            soft_wrap=True,
        )
        late = wait_until_stopped(server, stop)
        name = signal.Signals(stop.signum).name
        if late is None:
            err_console.print(f"stopped ({name}), drained", markup=False)
        else:
            # Triton 2.51 waits for clients to close their HTTP connections, idle ones too.
            err_console.print(
                f"stopped ({name}) when the {cfg.drain_timeout_s} s --drain-timeout ran out: "
                f"{late} (Triton waits for clients to close their connections)",
                markup=False,
                soft_wrap=True,
            )

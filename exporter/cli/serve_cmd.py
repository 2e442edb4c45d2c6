"""``tlx serve``: the run's chosen artifact behind a real Triton Inference Server."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from exporter.cli.app import command, say
from exporter.cli.options import build, given
from exporter.core.config import ServeConfig

TUNED = ("max_batch", "max_queue_delay_us", "instances", "threads")  # RUN/tune.json's


class StopRequest(threading.Event):
    """Set by SIGINT/SIGTERM (its handler); remembers which signal asked."""

    signum: int = signal.SIGTERM

    def handler(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        self.set()


def planned(ctx: typer.Context, run: Path, options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The options with RUN/tune.json's plan for the batcher settings not given (those the
    command has), and whether any came from it (``tlx serve`` and ``export --format triton``)."""
    from exporter.core.runreports import serve_settings

    mine = {k: options[k] if given(ctx, k) else None for k in TUNED}
    where = {k: options.get(k) for k in ("device", "variant", "runtime")}
    tuned, from_tune = serve_settings(run, mine, **where)
    return {**options, **{k: v for k, v in tuned.items() if v is not None}}, from_tune


@command("serve", ServeConfig)
def serve_command(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="The run folder (with manifest.json from export).")],
    **options: Any,
) -> None:
    """Serve the run's artifact over HTTP and gRPC (KServe v2) until SIGINT/SIGTERM.

    Prints one `ready` line once the model is warm and answered a request through the server.
    Exit codes: 0 stopped cleanly by a signal, 2 bad option or run, 3 the server cannot start
    here (nvidia-pytriton missing, a port in use) or stopped by itself (tritonserver exited,
    or a model instance's backend process died: a supervisor should restart it).
    """
    stop = StopRequest()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.handler)
    from exporter.serve.server import start_server, wait_until_stopped

    params, from_tune = planned(ctx, run, options)
    cfg = build(ServeConfig, params)
    server = start_server(run, cfg, stop=stop)
    say(server.ready_line(tuned=from_tune))
    late = wait_until_stopped(server, stop)
    name = signal.Signals(stop.signum).name
    if late is None:
        say(f"stopped ({name}), drained", err=True)
    else:
        # Triton 2.51 waits for clients to close their HTTP connections, idle ones too.
        say(
            f"stopped ({name}) when the {cfg.drain_timeout_s} s --drain-timeout ran out: "
            f"{late} (Triton waits for clients to close their connections)",
            err=True,
        )

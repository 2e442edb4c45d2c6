"""``tlx train --nproc N``: start the workers through torchrun (``torch.distributed.run``).

This process becomes torchrun's elastic agent: it starts ``N`` copies of ``python -m exporter
train ...`` (the same options, minus the launcher's), restarts the whole group up to
``max_restarts`` times (each restart resumes from the last checkpoint), and forwards SIGTERM
and SIGINT to the workers, which checkpoint and stop. Its exit status is the workers' own
(2 bad input, 3 environment, 143 SIGTERM, ...), so scripts see what a single process would
return.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

from exporter.core.config import LaunchSpec
from exporter.core.errors import (
    EnvironmentUnavailable,
    Interrupted,
    TlxError,
    UsageError,
)
from exporter.core.machine import usable_cpus

__all__ = ["LaunchSpec", "WorkerFailed", "check_rdzv_endpoint", "launch", "torchrun_args"]

# Seconds the agent waits for workers to save their checkpoint after a signal (torchrun's
# own default, 30 s, can be shorter than writing a VGG16 checkpoint to a slow disk).
SHUTDOWN_TIMEOUT_S = 120
WORKER_CODES = (1, 2, 3, 130, 143)  # TlxError exit codes: the worker printed why
RDZV_DEFAULT_PORT = 29400  # torchrun's c10d default when the endpoint names no port
PROBE_TIMEOUT_S = 5.0
# c10d's TCPStore wire protocol (torch/csrc/distributed/c10d/TCPStoreBackend.hpp): a client
# sends VALIDATE with this magic number, then PING with a nonce the store echoes back.
_STORE_MAGIC = 0x3C85F7CE
_QUERY_VALIDATE, _QUERY_PING = 0, 13


def torchrun_args(spec: LaunchSpec, worker_args: list[str]) -> list[str]:
    """torchrun's command line that runs ``python -m exporter train <worker_args>``."""
    args = [
        "--nproc-per-node",
        str(spec.nproc),
        "--max-restarts",
        str(spec.max_restarts),
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT_S),
    ]
    if spec.nnodes == 1 and not spec.rdzv_endpoint:
        args.append("--standalone")  # a free local port, no rendezvous server to name
    else:
        args += ["--nnodes", str(spec.nnodes), "--rdzv-backend", "c10d"]
        args += ["--rdzv-endpoint", str(spec.rdzv_endpoint), "--rdzv-id", spec.rdzv_id]
    return [*args, "-m", "exporter", "train", *worker_args]


def launch(spec: LaunchSpec, worker_args: list[str]) -> None:
    """Run the workers to the end under torchrun's agent.

    Raises:
        TlxError: a worker failed; ``exit_code`` is that worker's exit status.
        Interrupted: this process got SIGTERM/SIGINT (the workers were told to checkpoint).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import get_args_parser, run

    if spec.rdzv_endpoint:
        check_rdzv_endpoint(str(spec.rdzv_endpoint))
    if "OMP_NUM_THREADS" not in os.environ:
        # torchrun would set 1 thread per worker; on CPU the cores are better split evenly.
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // spec.nproc))
    args = get_args_parser().parse_args(torchrun_args(spec, worker_args))
    # The agent logs every worker failure at length; the workers print their own one-line
    # reason and the exit status says the rest (TLX_DEBUG=1 keeps torchrun's log).
    quiet = os.environ.get("TLX_DEBUG", "") in ("", "0")
    agent_log = logging.getLogger("torch.distributed.elastic")
    old_level = agent_log.level
    if quiet:
        agent_log.setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise _worker_failed(rank, failure.exitcode) from None
    except RendezvousError as exc:
        raise EnvironmentUnavailable(
            f"--rdzv-endpoint {spec.rdzv_endpoint or 'localhost'}: the processes could not meet "
            f"({exc.__class__.__name__}: {str(exc)[:200]}); check that every node runs the same "
            "command and can reach that HOST:PORT"
        ) from None
    except ValueError as exc:  # torchrun's parsing of the endpoint and node counts
        raise UsageError(f"torchrun refused the launcher options: {str(exc)[:300]}") from None
    except SignalException as exc:
        raise Interrupted(
            f"{exc.sigval.name} received: the workers were told to save a checkpoint and stop; "
            "continue with `tlx train --resume RUN`",
            signum=int(exc.sigval),
        ) from None
    finally:
        agent_log.setLevel(old_level)


def check_rdzv_endpoint(endpoint: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when something other than a PyTorch rendezvous store holds ``HOST:PORT``.

    torchrun's agent would connect to it and wait for a store's reply that never comes (its
    TCPStore client ignores its own timeout there: 300 s+ in silence). Nothing listening is
    fine (this node or another will host the store; a remote one that never comes up ends
    in torchrun's rendezvous timeout, exit 3); a store that answers the ping is fine.

    Raises:
        EnvironmentUnavailable: the port answers but not as a store (exit 3).
    """
    host, _, port_text = endpoint.rpartition(":")
    if not host or not port_text.isdigit():
        host, port_text = endpoint, str(RDZV_DEFAULT_PORT)  # torchrun parses (and refuses) it
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port_text)), timeout=timeout)
    except (OSError, ValueError, OverflowError):
        return  # nothing there yet (or a name torchrun will refuse with its own message)
    nonce = os.getpid() & 0xFFFFFFFF
    with sock:
        try:
            sock.sendall(
                struct.pack("=BI", _QUERY_VALIDATE, _STORE_MAGIC)
                + struct.pack("=BI", _QUERY_PING, nonce)
            )
            reply = sock.makefile("rb").read(4)  # 4 bytes, or fewer at end of stream
        except OSError:  # timed out or reset: not a store
            reply = b""
    if reply != struct.pack("=I", nonce):
        raise EnvironmentUnavailable(
            f"--rdzv-endpoint {endpoint}: another program holds that port (it is not a PyTorch "
            f"rendezvous store: no reply to the store's ping in {timeout:g} s), so the "
            "training processes could never meet there; stop that program or pick a free port"
        )


class WorkerFailed(TlxError):
    """A worker stopped with a tlx exit status after printing its own one-line reason."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _worker_failed(rank: int, code: int) -> TlxError:
    if code in WORKER_CODES:
        return WorkerFailed(
            f"training process rank {rank} exited with status {code}", exit_code=code
        )
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return EnvironmentUnavailable(
        f"training process rank {rank} {how}; the last checkpoint is intact: continue with "
        "`tlx train --resume RUN` (or pass --max-restarts N to restart automatically)"
    )

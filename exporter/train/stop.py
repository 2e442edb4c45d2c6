"""Stopping on a signal: every rank stops at the same step, so rank 0 can checkpoint it.

SIGINT/SIGTERM only set a flag. Single process: the loop checks it between steps. Several
processes: the flags travel in the per-step all-reduce (and in :meth:`StopSignal.sync` where
ranks meet outside steps), so a signal to any one rank stops all of them after the same step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.errors import Interrupted
from exporter.train.distributed import DistContext

__all__ = ["Stop", "StopSignal"]


class Stop(Exception):
    """A signal arrived: unwind to the point that saves the checkpoint."""


class StopSignal:
    """The signal this rank received, or that any rank received once the ranks agreed on it."""

    def __init__(self, dist: DistContext) -> None:
        self.dist = dist
        self.signum: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """SIGINT/SIGTERM set the flag while inside; a second one aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        # Under torchrun a Ctrl-C reaches a worker twice (from the terminal, then forwarded by
        # the agent): repeats are ignored there, and the agent's shutdown timeout is the hard stop.
        repeat_aborts = "TORCHELASTIC_RUN_ID" not in os.environ

        def handler(signum: int, frame: Any) -> None:
            if self.signum is not None:
                if repeat_aborts:
                    raise KeyboardInterrupt
                return
            self.signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def flags(self) -> np.ndarray:
        """This rank's (SIGINT, SIGTERM) flags, for the next all-reduce."""
        return np.array(
            [self.signum == signal.SIGINT, self.signum == signal.SIGTERM], dtype=np.float64
        )

    def adopt(self, flags: np.ndarray) -> bool:
        """Take the signal any rank received as this rank's own; True if the all-reduced
        ``flags`` show one. Only the reduced flags decide: a signal that reached this rank
        after the reduce is in the next one, so every rank stops after the same step."""
        if self.signum is None and flags[1] > 0:
            self.signum = int(signal.SIGTERM)
        elif self.signum is None and flags[0] > 0:
            self.signum = int(signal.SIGINT)
        return bool(flags.sum() > 0)

    def pending_here(self) -> bool:
        """A signal this single process received (several processes wait for the reduce)."""
        return self.signum is not None and not self.dist.enabled

    def check_here(self) -> None:
        """A stop point inside one rank's own work (cache build): single process only, since
        ranks reach it a different number of times; :meth:`sync` follows soon after."""
        if self.pending_here():
            raise Stop

    def sync(self) -> None:
        """A stop point every rank reaches together: stop everywhere if any rank got a signal."""
        if self.adopt(self.dist.all_reduce_sum(self.flags())):
            raise Stop

    def interrupted(self, *, epoch: int, step: int, run_dir: Path) -> Interrupted:
        """The error that ends the run once its checkpoint is saved (exit 130 or 143)."""
        name = signal.Signals(self.signum).name if self.signum else "signal"
        return Interrupted(
            f"{name} received: stopped at epoch {epoch} step {step} and saved "
            f"a checkpoint; continue with `tlx train --resume {run_dir}`",
            signum=int(self.signum or signal.SIGINT),
        )

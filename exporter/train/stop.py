"""Stopping on a signal: every rank stops at the same step, so rank 0 can checkpoint it.

SIGINT/SIGTERM only set a flag. Single process: the loop checks it between steps. Several
processes: the flags travel in the per-step all-reduce (and in :meth:`_sync_stop` where ranks
meet outside steps), so a signal to any one rank stops all of them after the same step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np


class _Stop(Exception):
    """Internal: a signal arrived; unwind to the point that saves the checkpoint."""


class StopMixin:
    """Signal handling of :class:`~exporter.train.loop.Trainer`."""

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set a flag checked between steps; a second one aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        # Under torchrun a Ctrl-C reaches a worker twice (from the terminal, then forwarded by
        # the agent): repeats are ignored there, and the agent's shutdown timeout is the hard stop.
        repeat_aborts = "TORCHELASTIC_RUN_ID" not in os.environ

        def handler(signum: int, frame: Any) -> None:
            if self._signum is not None:
                if repeat_aborts:
                    raise KeyboardInterrupt
                return
            self._signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _signal_flags(self) -> np.ndarray:
        return np.array(
            [self._signum == signal.SIGINT, self._signum == signal.SIGTERM], dtype=np.float64
        )

    def _adopt_flags(self, flags: np.ndarray) -> bool:
        """Take the signal any rank received as this rank's own; True if the all-reduced
        ``flags`` show one. Only the reduced flags decide: a signal that reached this rank
        after the reduce is in the next one, so every rank stops after the same step."""
        if self._signum is None and flags[1] > 0:
            self._signum = int(signal.SIGTERM)
        elif self._signum is None and flags[0] > 0:
            self._signum = int(signal.SIGINT)
        return bool(flags.sum() > 0)

    def _check_stop(self) -> None:
        """A stop point inside one rank's own work (cache build): single process only, since
        ranks reach it a different number of times; :meth:`_sync_stop` follows soon after."""
        if self._signum is not None and not self.dist.enabled:
            raise _Stop

    def _sync_stop(self) -> None:
        """A stop point every rank reaches together: stop everywhere if any rank got a signal."""
        if self._adopt_flags(self.dist.all_reduce_sum(self._signal_flags())):
            raise _Stop

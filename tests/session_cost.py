"""What a test session costs: wall time, bytes written to disk, peak memory (printed at the end).

``make test`` must fit a budget (minutes on 2 cores, gigabytes written), so every run reports
what it spent. The figures come from the kernel, not from guesses:

* ``write_bytes`` (``/proc/self/io``): bytes this process and its reaped children sent to
  the block layer, counted when a page of a file on a real disk is dirtied. Files on tmpfs
  (``/dev/shm``) never reach a disk and count zero; ``cancelled_write_bytes`` is the part
  truncated or deleted before writeback (it was counted but may never have hit the disk).
* ``wchar``: every byte passed to write(), pipes, sockets and tmpfs included.
* peak RSS: ``ru_maxrss`` of this process and, separately, of its largest reaped child.

Test folders go to tmpfs where memory allows (tests/conftest.py, ``TLX_TEST_TMP``); the
summary names where they were.

Set ``TLX_TEST_IO=<file>`` to also write one line per test (node id, seconds, bytes written
to disk, wchar) to that file, largest writers first: where the suite's bytes and seconds go.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

_FIELDS = ("rchar", "wchar", "write_bytes", "cancelled_write_bytes")


def read_io() -> dict[str, int]:
    """This process's I/O counters (threads and reaped children included); empty off Linux."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: int(value) for key, value in pairs if key in _FIELDS}


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


class SessionCost:
    """Pytest plugin: session totals always, per-test rows when ``TLX_TEST_IO`` is set."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.io0 = read_io()
        self.rows: list[tuple[str, float, int, int]] = []
        self.per_test = os.environ.get("TLX_TEST_IO")
        self._open: dict[str, tuple[float, dict[str, int]]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        if not self.per_test:
            return (yield)
        t0, io0 = time.monotonic(), read_io()
        try:
            return (yield)
        finally:
            io1 = read_io()
            self.rows.append(
                (
                    item.nodeid,
                    time.monotonic() - t0,
                    io1.get("write_bytes", 0) - io0.get("write_bytes", 0),
                    io1.get("wchar", 0) - io0.get("wchar", 0),
                )
            )
            self._flush()

    def _flush(self) -> None:
        assert self.per_test
        rows = sorted(self.rows, key=lambda r: -r[2])
        lines = [f"{b}\t{w}\t{s:.2f}\t{nodeid}" for nodeid, s, b, w in rows]
        Path(self.per_test).write_text("write_bytes\twchar\tseconds\ttest\n" + "\n".join(lines))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        io = read_io()
        spent = {k: io.get(k, 0) - self.io0.get(k, 0) for k in _FIELDS}
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        minutes, seconds = divmod(time.monotonic() - self.start, 60)
        tr = terminalreporter
        tr.section("session cost", sep="-")
        tr.write_line(f"wall time        {int(minutes)} min {seconds:04.1f} s")
        tr.write_line(
            f"written to disk  {_gib(spent['write_bytes'])} (write_bytes; "
            f"{_gib(spent['cancelled_write_bytes'])} of it deleted before writeback)"
        )
        tr.write_line(f"all writes       {_gib(spent['wchar'])} (wchar: pipes, tmpfs included)")
        tr.write_line(f"peak RSS         {_gib(own)} (pytest), {_gib(child)} (largest child)")
        base = tr.config.option.basetemp
        tr.write_line(f"temp folders     {base or 'pytest default (disk)'}")
        if self.per_test:
            tr.write_line(f"per-test figures {self.per_test}")

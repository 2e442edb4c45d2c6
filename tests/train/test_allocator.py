"""The training allocator setting: on by default, off when the user manages malloc."""

from __future__ import annotations

import os
import platform
import sys

import pytest
from session_malloc import keep_freed_memory

from exporter.train.device_setup import reuse_freed_memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning exists only on Linux glibc")
def test_on_by_default_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    # What it saves (page faults) is measured by benchmarks/allocator_bench.py.
    for name in [
        "TLX_MALLOC_TUNING",
        "LD_PRELOAD",
        *(k for k in os.environ if k.startswith("MALLOC_")),
    ]:
        monkeypatch.delenv(name, raising=False)  # the default, whatever the shell has
    try:
        with reuse_freed_memory() as active:
            assert active
    finally:
        keep_freed_memory()  # the block restored glibc's defaults; the session keeps its own


@pytest.mark.parametrize(
    ("name", "value"),
    [("TLX_MALLOC_TUNING", "0"), ("MALLOC_ARENA_MAX", "2"), ("LD_PRELOAD", "libjemalloc.so.2")],
)
def test_off_when_asked_or_when_the_user_manages_malloc(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with reuse_freed_memory() as active:
        assert not active

"""The training allocator setting: freed big buffers are reused, not re-faulted."""

from __future__ import annotations

import os
import platform
import resource
import sys

import pytest

from exporter.core.allocator import reuse_freed_memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


def _faults_for_alloc_cycles(n: int = 6, mb: int = 64) -> int:
    import torch

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t = torch.empty(mb * 2**20 // 4)
        t.fill_(1.0)  # touch every page
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning exists only on Linux glibc")
def test_freed_buffers_are_reused_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        "TLX_MALLOC_TUNING",
        "LD_PRELOAD",
        *(k for k in os.environ if k.startswith("MALLOC_")),
    ]:
        monkeypatch.delenv(name, raising=False)  # the default, whatever the shell has
    outside = _faults_for_alloc_cycles()
    with reuse_freed_memory() as active:
        assert active
        _faults_for_alloc_cycles()  # the heap grows to the working set once
        inside = _faults_for_alloc_cycles()
    # Six 64 MB buffers: ~6 × 16k page faults when each is a fresh mmap; once the heap holds
    # them, few (measured 98k outside vs 33k inside).
    assert inside < outside / 2


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

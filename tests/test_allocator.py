"""The training allocator setting: freed big buffers are reused, not re-faulted."""

from __future__ import annotations

import platform
import resource
import sys

import pytest

from exporter.allocator import reuse_freed_memory

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
    monkeypatch.delenv("TLX_MALLOC_TUNING", raising=False)  # the default, whatever the shell has
    outside = _faults_for_alloc_cycles()
    with reuse_freed_memory() as active:
        assert active
        _faults_for_alloc_cycles()  # the heap grows to the working set once
        inside = _faults_for_alloc_cycles()
    # Six 64 MB buffers: ~6 × 16k page faults when each is a fresh mmap; once the heap holds
    # them, few (measured 98k outside vs 33k inside).
    assert inside < outside / 2


def test_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLX_MALLOC_TUNING", "0")
    with reuse_freed_memory() as active:
        assert not active

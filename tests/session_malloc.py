"""The test session keeps freed memory in glibc's heap, as ``tlx train`` does while it trains.

Almost every test builds, loads or exports a VGG16 (528 MB of weights at 32 px): glibc serves
each of those buffers with a fresh ``mmap`` and unmaps it on free, so the next model faults
the same hundreds of MB of zeroed pages back in. Measured on tests/verify/test_verify.py (2
cores): 9.8M minor page faults and 28.8 s system time → 1.5M and 11.1 s, wall 60.5 → 41.0 s,
peak RSS 5.7 → 6.3 GB. The rule is the product's (:func:`exporter.train.device_setup.
reuse_freed_memory`): no mmap for big blocks, never trim the heap; a user's own ``MALLOC_*``
settings or preloaded allocator are left alone. The environment variables carry the same
setting to the ``tlx`` subprocesses the tests start.
"""

from __future__ import annotations

import ctypes
import os

from exporter.train.device_setup import keep_freed_memory as keep_in_this_process

# The same setting for the subprocesses, as glibc reads it from the environment (mallopt(3)).
ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 62)}
HAND_BACK_BELOW = 8 << 30  # bytes of MemAvailable, above what any test's resource check asks for
_applied: list[bool] = []  # whether this process took the setting


def keep_freed_memory() -> bool:
    """Apply the setting to this process and its future children; whether it took effect
    (not off Linux glibc, nor when the user manages malloc: checked before ENV is set)."""
    ok = keep_in_this_process()
    if ok:
        os.environ.update(ENV)
    _applied[:] = [ok]
    return ok


def hand_back_freed_memory(mem_available: int) -> None:
    """Return the heap's free pages to the OS when memory runs short (between tests: a kept
    heap reads as used memory to the next test's resource check, which reads MemAvailable).

    Only below :data:`HAND_BACK_BELOW`: handing back after every test re-faulted 2.7x the
    pages (tests/verify/test_verify.py: 3.94 M vs 1.47 M minor faults).
    """
    if any(_applied) and mem_available < HAND_BACK_BELOW:
        ctypes.CDLL("libc.so.6").malloc_trim(0)

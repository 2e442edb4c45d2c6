"""Device- and process-dependent pieces of the training loop: determinism, the AMP dtype, the
7x7 pool, torch's thread count, glibc's allocator while ``fit()`` runs.

Kept out of ``loop.py`` so that the loop reads as the algorithm and CUDA's special cases
are tested here on their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

# VGG16's trunk gives 7x7 maps at 224 px: the adaptive pool to 7x7 is then the identity.
POOL_HW = (7, 7)
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
MALLOC_TUNING_ENV = "TLX_MALLOC_TUNING"  # "0" leaves the allocator alone
# glibc's defaults (DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD), restored after training.
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024


@contextlib.contextmanager
def determinism(enabled: bool, device_type: str) -> Iterator[dict[str, Any]]:
    """Deterministic algorithms for the run, restoring every global flag on exit.

    On CUDA ``warn_only=True``: the backward of ``adaptive_avg_pool2d`` has no deterministic
    CUDA kernel and would raise once the trunk is unfrozen below 224 px (at 224 px the pool
    is skipped, see :func:`pool`); torch then warns instead of stopping the run. Without
    ``enabled``, CUDA gets ``cudnn.benchmark`` (fastest algorithms for fixed shapes).

    Yields what was set, for the record.
    """
    import torch

    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get(CUBLAS_ENV),
    )
    cuda = device_type == "cuda"
    state: dict[str, Any] = {"deterministic": enabled, "warn_only": enabled and cuda}
    try:
        if enabled:
            os.environ.setdefault(CUBLAS_ENV, ":4096:8")  # cuBLAS needs it to be deterministic
            torch.use_deterministic_algorithms(True, warn_only=cuda)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif cuda:
            torch.backends.cudnn.benchmark = True
        yield state
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:4]
        if saved[4] is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = saved[4]


def amp_dtype(device_type: str, amp: bool, *, device_index: int | None = None) -> Any:
    """The autocast dtype: bf16 where the GPU computes it natively, else fp16, None off CUDA.

    ``torch.cuda.is_bf16_supported()`` is also true on GPUs that emulate bf16 (T4, V100);
    those train faster in fp16 with a GradScaler, so compute capability decides.
    """
    import torch

    from exporter.runtimes.cuda_math import native_bf16

    if device_type != "cuda" or not amp:
        return None
    return torch.bfloat16 if native_bf16(device_index) else torch.float16


def pool(model: Any, f: Any) -> Any:
    """``model.avgpool(f)``, skipped when ``f`` already has the pooled size (exactly equal).

    Averaging one element is the identity, and skipping it keeps the unfrozen trunk's
    backward free of ``adaptive_avg_pool2d``, which has no deterministic CUDA kernel.
    """
    out = getattr(model.avgpool, "output_size", None)
    target = (out, out) if isinstance(out, int) else tuple(out) if out is not None else None
    if target == POOL_HW and tuple(f.shape[-2:]) == POOL_HW:
        return f
    return model.avgpool(f)


def cap_torch_threads() -> None:
    """At most one torch thread per usable core (a container's quota included).

    torch counts the node's cores (kserve/kserve #1031); OMP_NUM_THREADS, when set (torchrun's
    workers, Ray), is the user's word and kept. Lowering only: a process given fewer threads
    on purpose keeps them.
    """
    import torch

    from exporter.core.machine import usable_cpus

    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, freed memory stays in glibc's heap; afterwards glibc's defaults
    return and the kept free pages go back to the OS (any device; the win is on CPU).

    glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and unmaps it on free, so each VGG16 training step re-faults hundreds of MB of
    zeroed pages: fc1's 411 MB gradient, the optimizer's temporaries, 224-px activations.
    Turning mmap off for the process (``M_MMAP_MAX=0``) and never trimming the heap
    (``M_TRIM_THRESHOLD=-1``) lets those buffers be reused, which is what tcmalloc/jemalloc
    (the allocators Intel recommends for PyTorch on CPU) do. Measured on 2 cores: a batch-64
    head step 374 -> 260 ms, minor page faults 1.65M -> 0.46M per 12 steps. The cost is that
    the process keeps its peak heap while training runs.

    Yields whether it took effect: not when ``TLX_MALLOC_TUNING=0``, off Linux glibc, or when
    the user manages malloc (``MALLOC_*`` env variables or a preloaded allocator).
    """
    libc = _glibc()
    active = keep_freed_memory()
    try:
        yield active
    finally:
        if active and libc is not None:
            _mallopt(libc, mmap_max=DEFAULT_MMAP_MAX, trim_threshold=DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)  # hand the free pages kept during training back to the OS


def keep_freed_memory() -> bool:
    """:func:`reuse_freed_memory`'s setting for the rest of the process (nothing restores it);
    whether it took effect (the same conditions)."""
    libc = _glibc()
    return libc is not None and _mallopt(libc, mmap_max=0, trim_threshold=-1)


def _glibc() -> Any:
    if os.environ.get(MALLOC_TUNING_ENV, "1") == "0":
        return None
    if any(k.startswith("MALLOC_") for k in os.environ) or os.environ.get("LD_PRELOAD"):
        return None  # the user tuned or replaced malloc: leave their choice alone
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _mallopt(libc: Any, *, mmap_max: int, trim_threshold: int) -> bool:
    # mallopt returns 1 on success; a trim threshold of -1 means "never trim".
    try:
        ok_mmap = libc.mallopt(M_MMAP_MAX, mmap_max) == 1
        return ok_mmap and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    except AttributeError:
        return False

"""Device-dependent pieces of the training loop: determinism, the AMP dtype, the 7x7 pool,
torch's thread count.

Kept out of ``loop.py`` so that the loop reads as the algorithm and CUDA's special cases
are tested here on their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# VGG16's trunk gives 7x7 maps at 224 px: the adaptive pool to 7x7 is then the identity.
POOL_HW = (7, 7)
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


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

"""Device-dependent pieces of the training loop: determinism, the AMP dtype, the head's
forward, and a batch sampler that lets DataLoader workers live across epochs.

Kept out of ``loop.py`` so that the loop reads as the algorithm and CUDA's special cases
are tested here on their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
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


def make_head(model: Any) -> Any:
    """A module running pool → flatten → classifier of ``model`` (shares its parameters)."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, f: torch.Tensor) -> torch.Tensor:
            return self.model.classifier(torch.flatten(pool(self.model, f), 1))

    return Head()


class EpochBatches:
    """A batch sampler whose batches are replaced each epoch.

    A DataLoader built once over it can keep ``persistent_workers``: workers are not
    re-forked every epoch (the sampler is read in the main process at each iteration).
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def set(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [list(map(int, b)) for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

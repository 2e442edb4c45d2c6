"""What "fp32" and "bf16" really mean on a CUDA device: TF32 switches and native bf16.

cuDNN convolutions run in TF32 by default (``torch.backends.cudnn`` allows it), which keeps
only 10 mantissa bits: VGG16 logits then differ from the CPU's by 1e-3 to 1e-2, above the
fp32 tolerance. Verify turns TF32 off for fp32 candidates and bench records whether it was
on, so a number labelled "fp32" is fp32 math. torch >= 2.9 has per-backend
``fp32_precision`` settings and refuses a mix of them with the legacy ``allow_tf32`` flags
(pytorch docs, "TensorFloat-32 (TF32) on Ampere (and later) devices"), so only the new API
is used (tlx requires torch >= 2.10).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# NVIDIA's libraries (cuBLAS, cuDNN, TensorRT's builder) read this at build/handle time;
# "0" forbids TF32 whatever the framework asks (NVIDIA's TF32 documentation).
TF32_OVERRIDE_ENV = "NVIDIA_TF32_OVERRIDE"


def tf32_flags() -> dict[str, Any]:
    """torch's TF32 settings now, as recorded in verify.json and bench.json."""
    import torch

    b = torch.backends
    return {
        "api": "fp32_precision",
        "matmul": b.cuda.matmul.fp32_precision,
        "cudnn_conv": b.cudnn.conv.fp32_precision,
        "cudnn_rnn": b.cudnn.rnn.fp32_precision,
    }


def _set(flags: dict[str, Any]) -> None:
    import torch

    b = torch.backends
    b.cuda.matmul.fp32_precision = flags["matmul"]
    b.cudnn.conv.fp32_precision = flags["cudnn_conv"]
    b.cudnn.rnn.fp32_precision = flags["cudnn_rnn"]


def flags_for(allow: bool) -> dict[str, Any]:
    """The settings that allow (or forbid) TF32 in matmuls and cuDNN."""
    value = "tf32" if allow else "ieee"
    return {"api": "fp32_precision", "matmul": value, "cudnn_conv": value, "cudnn_rnn": value}


@contextlib.contextmanager
def tf32_mode(allow: bool) -> Iterator[dict[str, Any]]:
    """Allow or forbid TF32 in torch's CUDA matmuls and convolutions; restore on exit.

    Yields the settings in force inside (for the report). The flags are process-global, so
    the previous values always come back, also when the body raises.
    """
    before = tf32_flags()
    _set(flags_for(allow))
    try:
        yield tf32_flags()
    finally:
        _set(before)


@contextlib.contextmanager
def tf32_env_override(allow: bool) -> Iterator[None]:
    """Set ``NVIDIA_TF32_OVERRIDE=0`` while a library builds kernels (TensorRT), unless allowed."""
    if allow:
        yield
        return
    saved = os.environ.get(TF32_OVERRIDE_ENV)
    os.environ[TF32_OVERRIDE_ENV] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(TF32_OVERRIDE_ENV, None)
        else:
            os.environ[TF32_OVERRIDE_ENV] = saved


def fp32_label(device: str, tf32: bool) -> str:
    """The truthful name of fp32 math on ``device``: ``tf32`` when TF32 was allowed on CUDA."""
    return "tf32" if tf32 and device.startswith("cuda") else "fp32"


def native_bf16(device_index: int | None = None) -> bool:
    """Whether the GPU computes bf16 natively (compute capability >= 8.0, Ampere on).

    ``torch.cuda.is_bf16_supported()`` is also true where bf16 is emulated (T4, V100), which
    is slower than fp16 with a GradScaler.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability(device_index)
    return major >= 8

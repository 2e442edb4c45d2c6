"""Helpers shared by the PyTorch-based runtimes (eager, TorchScript, .pt2, compile)."""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.errors import RuntimeUnavailable

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def check_device(device: str) -> None:
    """Raise RuntimeUnavailable when CUDA is asked for and absent."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailable(
            "CUDA was requested but torch.cuda.is_available() is False on this machine; "
            "use --device cpu"
        )


def autocast_context(device: str, precision: str) -> Any:
    """An autocast context for fp16/bf16, or a null context for fp32."""
    import contextlib

    import torch

    if precision in TORCH_DTYPES:
        return torch.autocast(
            device_type="cuda" if device.startswith("cuda") else "cpu",
            dtype=getattr(torch, TORCH_DTYPES[precision]),
        )
    return contextlib.nullcontext()


def to_device_tensor(x: np.ndarray, device: str, *, channels_last: bool = False) -> Any:
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def tensor_to_numpy(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def cuda_sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()

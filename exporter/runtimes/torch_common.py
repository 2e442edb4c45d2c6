"""Helpers shared by the PyTorch-based runtimes (eager, TorchScript, .pt2, compile)."""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.core.choices import DEVICES
from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.runtimes.base import Runtime

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


def cast_for_artifact(t: Any, precision: str) -> Any:
    """Cast a float32 input to a half-precision artifact's own dtype (fp32 stays as is)."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    return t if dtype is None else t.to(dtype)


class SerializedModuleRuntime(Runtime):
    """A torch module loaded from a hash-checked file (TorchScript, .pt2).

    Subclasses say only how to load the file (:meth:`load_module`); device checks, threads,
    the hash gate, the error for a corrupt file, and the run loop are shared.
    """

    devices = DEVICES
    kind: str  # what the file is, for messages ("TorchScript file")
    export_format: str  # the `tlx export --format` value that re-creates it

    def load_module(self, path: Any) -> Any:
        """Load the (already hash-checked) file into a callable module on ``self.device``."""
        raise NotImplementedError

    def load(self) -> None:
        import torch

        check_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.artifact.verified_path()
        try:
            self.module = self.load_module(path)
        except Exception as exc:  # a corrupt/foreign file is the user's input problem
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise InputFileError(
                f"cannot load {self.kind} {path}: {exc.__class__.__name__}: {first} "
                f"(re-export it with `tlx export RUN --format {self.export_format} --force`)"
            ) from exc

    def prepare(self, x: np.ndarray) -> Any:
        return cast_for_artifact(to_device_tensor(x, self.device), self.artifact.precision)

    def run(self, prepared: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.module(prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        return tensor_to_numpy(output)

    def synchronize(self) -> None:
        cuda_sync(self.device)

    def close(self) -> None:
        self.module = None

"""The base of the PyTorch-based runtimes (eager, compile, TorchScript, .pt2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.core.choices import DEVICES
from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.runtimes.base import Runtime, error_line

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


class TorchRuntime(Runtime):
    """A torch module on the CPU or CUDA: device check, threads, tensors in and out, sync.

    Subclasses say only how to build the module (:meth:`build_module`).
    """

    devices = DEVICES
    module: Any = None
    channels_last: bool | None = None  # eager's option, known after load

    def build_module(self) -> Any:
        """The callable module on ``self.device`` (after its hash check)."""
        raise NotImplementedError

    def load(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailable(
                "CUDA was requested but torch.cuda.is_available() is False on this machine; "
                "use --device cpu"
            )
        torch.set_num_threads(self.threads)
        self.module = self.build_module()

    def prepare(self, x: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def run(self, prepared: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.module(prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        return output.detach().float().cpu().numpy()

    def synchronize(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def close(self) -> None:
        self.module = None


class SerializedModuleRuntime(TorchRuntime):
    """A torch module loaded from a hash-checked file (TorchScript, .pt2).

    Subclasses say only how to load the file (:meth:`load_module`); the hash gate, the error
    for a corrupt file and the cast to a half-precision file's dtype are shared.
    """

    kind: str  # what the file is, for messages ("TorchScript file")
    export_format: str  # the `tlx export --format` value that re-creates it

    def load_module(self, path: Any) -> Any:
        """Load the (already hash-checked) file into a callable module on ``self.device``."""
        raise NotImplementedError

    def build_module(self) -> Any:
        path = self.artifact.verified_path()
        try:
            return self.load_module(path)
        except Exception as exc:  # a corrupt/foreign file is the user's input problem
            raise InputFileError(
                f"cannot load {self.kind} {path}: {error_line(exc, 200)} "
                f"(re-export it with `tlx export RUN --format {self.export_format} --force`)"
            ) from exc

    def prepare(self, x: np.ndarray) -> Any:
        import torch

        # A half-precision file takes its own dtype (fp32 stays as is).
        dtype = TORCH_DTYPES.get(self.artifact.precision)
        t = super().prepare(x)
        return t if dtype is None else t.to(getattr(torch, dtype))

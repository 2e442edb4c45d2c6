"""TorchScript: ``torch.jit.load`` of ``model.ts``, only after its manifest hash matched.

``torch.jit.load`` has no safe mode (pytorch #77573), so the hash check is the trust gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.errors import InputFileError
from exporter.runtimes.base import Runtime, register
from exporter.runtimes.torch_common import (
    check_device,
    cuda_sync,
    tensor_to_numpy,
    to_device_tensor,
)


def cast_for_artifact(t: Any, precision: str) -> Any:
    """Cast a float32 input to a half-precision artifact's own dtype (fp32 stays as is)."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    return t if dtype is None else t.to(dtype)


@register
class TorchScriptRuntime(Runtime):
    """A traced TorchScript module run under ``torch.inference_mode`` on CPU or CUDA."""

    name = "torchscript"
    formats = ("torchscript",)
    devices = ("cpu", "cuda")

    def load(self) -> None:
        import torch

        check_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.artifact.verified_path()
        try:
            module = torch.jit.load(str(path), map_location=self.device)
        except Exception as exc:  # a corrupt/foreign file is the user's input problem
            raise InputFileError(
                f"cannot load TorchScript file {path}: {exc.__class__.__name__}: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''} "
                "(re-export it with `tlx export RUN --format torchscript --force`)"
            ) from exc
        self.module = module.eval()

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

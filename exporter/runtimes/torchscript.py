"""TorchScript: ``torch.jit.load`` of ``model.ts``, only after its manifest hash matched.

``torch.jit.load`` has no safe mode (pytorch #77573), so the hash check is the trust gate.
"""

from __future__ import annotations

from typing import Any

from exporter.runtimes.base import register
from exporter.runtimes.torch_common import SerializedModuleRuntime


@register
class TorchScriptRuntime(SerializedModuleRuntime):
    """A traced TorchScript module run under ``torch.inference_mode`` on CPU or CUDA."""

    name = "torchscript"
    formats = ("torchscript",)
    kind = "TorchScript file"
    export_format = "torchscript"

    def load_module(self, path: Any) -> Any:
        import torch

        return torch.jit.load(str(path), map_location=self.device).eval()

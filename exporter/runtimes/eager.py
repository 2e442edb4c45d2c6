"""PyTorch eager: the reference, rebuilt from the run's ``model.safetensors``."""

from __future__ import annotations

from typing import Any

from exporter.core.manifest import FileRecord
from exporter.core.runfolder import open_run
from exporter.model.vgg import load_reference_model
from exporter.runtimes.base import register
from exporter.runtimes.torch_common import TORCH_DTYPES, TorchRuntime


@register
class EagerRuntime(TorchRuntime):
    """``model(x)`` under ``torch.inference_mode``; fp16/bf16 via autocast; channels_last opt."""

    name = "eager"
    formats = ("safetensors",)

    def build_module(self) -> Any:
        import torch

        # An artifact from an opened run reuses it (train.json read once, the hash checked once).
        art = self.artifact
        run = art.run if art.run is not None else open_run(art.run_dir)
        expected = FileRecord(*art.files[0]) if art.files else None
        model = load_reference_model(run, expected=expected).to(self.device).eval()
        self.channels_last = bool(self.options.get("channels_last", False))
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def run(self, prepared: Any) -> Any:
        import torch

        if self.precision not in TORCH_DTYPES:
            return super().run(prepared)
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(device_type=kind, dtype=getattr(torch, TORCH_DTYPES[self.precision])):
            return super().run(prepared)

    def effective_precision(self) -> str:
        # fp16/bf16 run under autocast (matmuls and convolutions in that dtype).
        return self.precision if self.precision in TORCH_DTYPES else super().effective_precision()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["channels_last"] = self.channels_last
        return d

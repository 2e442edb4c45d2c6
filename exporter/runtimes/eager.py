"""PyTorch eager: the reference, rebuilt from the run's ``model.safetensors``."""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.core.choices import DEVICES
from exporter.core.manifest import FileRecord
from exporter.core.runfolder import open_run
from exporter.model.vgg import load_reference_model
from exporter.runtimes.base import Artifact, Runtime, register
from exporter.runtimes.torch_common import (
    TORCH_DTYPES,
    autocast_context,
    check_device,
    cuda_sync,
    tensor_to_numpy,
    to_device_tensor,
)


def load_eager_model(artifact: Artifact, device: str) -> Any:
    """The trained model from ``model.safetensors`` after its hash check, on ``device``."""
    # An artifact from an opened run reuses it (train.json read once, the hash checked once).
    info = artifact.run if artifact.run is not None else open_run(artifact.run_dir)
    expected = FileRecord(*artifact.files[0]) if artifact.files else None
    model = load_reference_model(info, expected=expected)
    return model.to(device).eval()


@register
class EagerRuntime(Runtime):
    """``model(x)`` under ``torch.inference_mode``; fp16/bf16 via autocast; channels_last opt."""

    name = "eager"
    formats = ("safetensors",)
    devices = DEVICES

    def load(self) -> None:
        import torch

        check_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.channels_last = bool(self.options.get("channels_last", False))
        model = load_eager_model(self.artifact, self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def prepare(self, x: np.ndarray) -> Any:
        return to_device_tensor(x, self.device, channels_last=self.channels_last)

    def run(self, prepared: Any) -> Any:
        import torch

        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return self.model(prepared)

    def to_numpy(self, output: Any) -> np.ndarray:
        return tensor_to_numpy(output)

    def effective_precision(self) -> str:
        # fp16/bf16 run under autocast (matmuls and convolutions in that dtype).
        return self.precision if self.precision in TORCH_DTYPES else super().effective_precision()

    def synchronize(self) -> None:
        cuda_sync(self.device)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["channels_last"] = getattr(self, "channels_last", None)  # None before load()
        return d

    def close(self) -> None:
        self.model = None

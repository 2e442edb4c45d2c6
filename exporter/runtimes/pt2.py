"""``torch.export`` programs: ``torch.export.load`` of ``model.pt2`` after its hash check.

Loading a .pt2 unpickles parts of the archive, so the manifest hash is the trust gate here
too; the program's ``.module()`` is what runs.
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
from exporter.runtimes.torchscript import cast_for_artifact


@register
class ExportedProgramRuntime(Runtime):
    """``torch.export.load(model.pt2).module()`` under ``torch.inference_mode``."""

    name = "pt2"
    formats = ("pt2",)
    devices = ("cpu", "cuda")

    def load(self) -> None:
        import torch

        check_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        path = self.artifact.verified_path()
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # a corrupt/foreign archive is the user's input problem
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise InputFileError(
                f"cannot load torch.export archive {path}: {exc.__class__.__name__}: {first} "
                "(re-export it with `tlx export RUN --format pt2 --force`)"
            ) from exc
        self.module = program.module().to(self.device)

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

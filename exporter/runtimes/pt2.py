"""``torch.export`` programs: ``torch.export.load`` of ``model.pt2`` after its hash check.

Loading a .pt2 unpickles parts of the archive, so the manifest hash is the trust gate here
too; the program's ``.module()`` is what runs.
"""

from __future__ import annotations

from typing import Any

from exporter.runtimes.base import register
from exporter.runtimes.torch_common import SerializedModuleRuntime


@register
class ExportedProgramRuntime(SerializedModuleRuntime):
    """``torch.export.load(model.pt2).module()`` under ``torch.inference_mode``."""

    name = "pt2"
    formats = ("pt2",)
    kind = "torch.export archive"
    export_format = "pt2"

    program: Any = None

    def load_module(self, path: Any) -> Any:
        import torch

        # Kept for callers that need the module tree back (torch.export.unflatten).
        self.program = torch.export.load(str(path))
        return self.program.module().to(self.device)

    def close(self) -> None:
        super().close()
        self.program = None

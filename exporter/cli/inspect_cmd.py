"""``tlx inspect``: the seed's model printout with parameter counts, or an artifact's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from exporter.cli.app import command, console, table
from exporter.cli.options import build
from exporter.core.config import InspectConfig


@command("inspect", InspectConfig)
def inspect_command(
    target: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder or an artifact (model.onnx / model.ts / model.pt2). "
            "Without it: the VGG16 transfer-learning model itself.",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Show the model (as the seed prints it) with parameter counts, or an artifact's metadata."""
    if target is not None:
        from exporter.export.inspection import inspect_target

        inspect_target(target, console=console)
        return
    from exporter.model.vgg import build_vgg16, count_parameters

    cfg = build(InspectConfig, options)
    model = build_vgg16(num_classes=cfg.num_classes, weights=cfg.weights)
    parts = {"model": model, "model.features": model.features}
    parts |= {"model.classifier": model.classifier, "model.classifier[6]": model.classifier[6]}
    for name, part in parts.items() if cfg.full else ():
        console.print(f"[bold]{name}[/]", markup=True)
        console.print(str(part), markup=False)
    counts = count_parameters(model)
    rows = ((c.block, f"{c.total:,}", f"{c.trainable:,}", f"{c.frozen:,}") for c in counts)
    console.print(table("VGG16 parameters", ("block", "total", "trainable", "frozen"), rows))

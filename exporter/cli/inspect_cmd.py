"""``tlx inspect``: the seed's model printout with parameter counts, or an artifact's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exporter.cli.app import command, console, table


@command("inspect")
def inspect_command(
    target: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder or an artifact (model.onnx / model.ts / model.pt2). "
            "Without it: the VGG16 transfer-learning model itself.",
        ),
    ] = None,
    num_classes: Annotated[
        int, typer.Option("--num-classes", min=1, help="Head size when inspecting the model.")
    ] = 10,
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="imagenet, a local .pth/.safetensors, or none. The architecture and counts "
            "do not depend on it, so 'none' (offline) is the default here.",
        ),
    ] = "none",
    full: Annotated[
        bool,
        typer.Option("--full/--brief", help="Print the whole module tree, or only the counts."),
    ] = True,
) -> None:
    """Show the model (as the seed prints it) with parameter counts, or an artifact's metadata."""
    if target is not None:
        from exporter.export.inspection import inspect_target

        inspect_target(target, console=console)
        return
    from exporter.model.vgg import build_vgg16, count_parameters

    model = build_vgg16(num_classes=num_classes, weights=weights)
    parts = {"model": model, "model.features": model.features}
    parts |= {"model.classifier": model.classifier, "model.classifier[6]": model.classifier[6]}
    for name, part in parts.items() if full else ():
        console.print(f"[bold]{name}[/]", markup=True)
        console.print(str(part), markup=False)
    counts = count_parameters(model)
    rows = ((c.block, f"{c.total:,}", f"{c.trainable:,}", f"{c.frozen:,}") for c in counts)
    console.print(table("VGG16 parameters", ("block", "total", "trainable", "frozen"), rows))

"""``tlx inspect``: the seed's model printout with parameter counts, or an artifact's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from exporter.cli.app import app, cli_errors, console


@app.command("inspect")
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
    with cli_errors():
        if target is not None:
            from exporter.export.inspection import inspect_target

            inspect_target(target, console=console)
            return
        from exporter.model.vgg import build_vgg16, count_parameters

        model = build_vgg16(num_classes=num_classes, weights=weights)
        if full:
            console.print("[bold]model[/]", markup=True)
            console.print(str(model), markup=False)
            console.print("[bold]model.features[/]", markup=True)
            console.print(str(model.features), markup=False)
            console.print("[bold]model.classifier[/]", markup=True)
            console.print(str(model.classifier), markup=False)
            console.print("[bold]model.classifier[6][/]", markup=True)
            console.print(str(model.classifier[6]), markup=False)
        console.print(param_table(count_parameters(model)))


def param_table(counts: list) -> Table:
    table = Table(title="VGG16 parameters")
    for col in ("block", "total", "trainable", "frozen"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for c in counts:
        table.add_row(c.block, f"{c.total:,}", f"{c.trainable:,}", f"{c.frozen:,}")
    return table

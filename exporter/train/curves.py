"""curves.png: training and validation loss and accuracy per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.fsio import write_with


def plot_curves(epochs: list[dict[str, Any]], dest: Path) -> None:
    """Write a two-panel PNG (loss, accuracy) of the per-epoch metrics atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(x, [e["train_loss"] for e in epochs], "o-", label="train")
    ax_loss.plot(x, [e["val_loss"] for e in epochs], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(x, [e["train_accuracy"] for e in epochs], "o-", label="train")
    ax_acc.plot(x, [e["val_accuracy"] for e in epochs], "o-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    unfreeze = [e["epoch"] for e in epochs if e.get("phase") == 2]
    if unfreeze:
        for ax in (ax_loss, ax_acc):
            ax.axvline(unfreeze[0] - 0.5, color="grey", ls="--", lw=1)
    fig.tight_layout()
    try:
        write_with(dest, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)

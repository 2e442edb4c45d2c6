"""What a run keeps besides its checkpoint: the epochs' history, the best weights, train.json,
curves.png and lr_find.png.

Rank 0 alone writes (every write atomic, through ``core/fsio.py``); the other ranks build the
same record and return it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.runfolder import CURVES_PNG, TRAIN_JSON, WEIGHTS_NAME
from exporter.train.common import _finite, divergence_warning

if TYPE_CHECKING:
    from exporter.train.lr_finder import LRFinderResult

__all__ = ["History", "plot_curves", "plot_lr_find", "save_weights", "write_record"]


@dataclass
class History:
    """The epochs so far, the best one (whose weights are saved) and early stopping's count."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0, "val_loss": None}
    )
    best_extra: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0

    def add(self, metrics: dict[str, Any], val: dict[str, Any], num_classes: int) -> bool:
        """Append an epoch's metrics, with a ``warning`` when the training loss looks
        diverged; True when its validation accuracy is the best so far."""
        losses = [e.get("train_loss") for e in self.epochs] + [metrics["train_loss"]]
        warning = divergence_warning(losses, num_classes)
        if warning is not None:
            metrics["warning"] = f"epoch {metrics['epoch']}: {warning}"
        self.epochs.append(metrics)
        if val["accuracy"] <= self.best["val_accuracy"]:
            self.bad_epochs += 1
            return False
        epoch, acc, loss = metrics["epoch"], val["accuracy"], val["loss"]
        self.best = {"epoch": epoch, "val_accuracy": acc, "val_loss": loss}
        self.best_extra = {k: val[k] for k in ("per_class_accuracy", "confusion_matrix")}
        self.bad_epochs = 0
        return True

    def state(self) -> dict[str, Any]:
        """The checkpoint's part (its ``loop`` block)."""
        return {
            "history": self.epochs,
            "best": self.best,
            "best_extra": self.best_extra,
            "bad_epochs": self.bad_epochs,
        }

    @classmethod
    def from_state(cls, loop: dict[str, Any]) -> History:
        best, extra = dict(loop["best"]), dict(loop["best_extra"])
        return cls(list(loop["history"]), best, extra, int(loop["bad_epochs"]))

    def per_rank_rates(self) -> list[float]:
        """Each rank's training images/s in the last epoch (one process: the epoch's own)."""
        last = self.epochs[-1] if self.epochs else {}
        return last.get("per_rank_images_per_s", [last["images_per_s"]] if last else [])

    def record(self) -> dict[str, Any]:
        """train.json's epochs, best epoch, and the best epoch's per-class figures."""
        return {
            "epochs": self.epochs,
            "best": {
                "epoch": self.best["epoch"],
                "val_accuracy": self.best["val_accuracy"] if self.best["epoch"] else None,
                "val_loss": _finite(self.best["val_loss"]),
            },
            "per_class_accuracy": self.best_extra.get("per_class_accuracy"),
            "confusion_matrix": self.best_extra.get("confusion_matrix"),
        }


def save_weights(model: Any, run_dir: Path) -> None:
    """model.safetensors (the best epoch's weights)."""
    from safetensors.torch import save_file

    from exporter.train.checkpoint import write_tensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_tensors(run_dir / WEIGHTS_NAME, state, lambda st, tmp: save_file(st, str(tmp)))


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """train.json, and curves.png once there is an epoch to draw."""
    from exporter.core.fsio import write_json

    write_json(run_dir / TRAIN_JSON, record)
    if record["epochs"]:
        plot_curves(record["epochs"], run_dir / CURVES_PNG)


def plot_curves(epochs: list[dict[str, Any]], dest: Path) -> None:
    """curves.png: training and validation loss and accuracy per epoch."""
    from exporter.core.report import new_figure, save_png

    fig, axes = new_figure(ncols=2, size=(5, 4))
    ax_loss, ax_acc = axes[0]
    x = [e["epoch"] for e in epochs]
    ax_loss.plot(x, [e["train_loss"] for e in epochs], "o-", label="train")
    ax_loss.plot(x, [e["val_loss"] for e in epochs], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(x, [e["train_accuracy"] for e in epochs], "o-", label="train")
    ax_acc.plot(x, [e["val_accuracy"] for e in epochs], "o-", label="val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    unfreeze = [e["epoch"] for e in epochs if e.get("phase") == 2]
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if unfreeze:
            ax.axvline(unfreeze[0] - 0.5, color="grey", ls="--", lw=1)
    save_png(dest, fig, dpi=100)


def plot_lr_find(result: LRFinderResult, dest: Path) -> None:
    """lr_find.png: smoothed loss against LR (log scale), the chosen LR marked; nothing
    when the sweep was skipped."""
    from exporter.core.report import new_figure, save_png

    if not result.lrs:
        return
    fig, axes = new_figure()
    ax = axes[0][0]
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.axvline(result.chosen_lr, color="red", ls="--", lw=1)
    i = min(range(len(result.lrs)), key=lambda k: abs(result.lrs[k] - result.chosen_lr))
    ax.plot([result.chosen_lr], [result.losses[i]], "ro")
    ax.set(
        xlabel="learning rate",
        ylabel="smoothed training loss",
        title=f"LR range test: chose {result.chosen_lr:.2e} ({result.rule})",
    )
    ax.grid(alpha=0.3, which="both")
    save_png(dest, fig, dpi=100)

"""Pieces the training loop and its facade share: events, the device, divergence checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


from exporter.core.choices import AUTO, CPU, CUDA
from exporter.core.config import DEFAULT_ARTIFACTS_DIR
from exporter.core.errors import EnvironmentUnavailable, GateFailed

__all__ = ["ProgressFn", "TrainEvent", "resolve_device"]


@dataclass(frozen=True)
class TrainEvent:
    """What the loop tells a progress callback.

    ``kind``: "start" (training begins; signal handlers are installed), "cache" (feature
    cache batch done), "lr_find" (the ``--lr auto`` range test starts), "step" (one optimizer
    step), "epoch" (epoch finished, ``metrics`` set), "done".
    """

    kind: str
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    accuracy: float | None = None
    images_per_s: float | None = None
    metrics: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def log_line(self) -> str | None:
        """The line a training log keeps for a "start" or "epoch" event (None for the others);
        scripts wait for the "training:" line before they send signals."""
        if self.kind == "start":
            world = self.info.get("world_size", 1)
            where = f"{world} processes ({self.info['device']} on rank 0)" if world > 1 else ""
            return (
                f"training: {self.info['run_dir']} on {where or self.info['device']}, "
                f"{self.epochs} epochs of {self.steps} steps"
            )
        if self.kind != "epoch" or self.metrics is None:
            return None
        m = self.metrics
        return (
            f"epoch {m['epoch']}/{self.epochs}: train loss {fmt_metric(m['train_loss'])} acc "
            f"{m['train_accuracy']:.3f} | val loss {fmt_metric(m['val_loss'])} acc "
            f"{m['val_accuracy']:.3f} | {m['images_per_s']:.1f} img/s {m['seconds']:.1f} s"
            + (" (feature cache)" if m.get("feature_cache") else "")
        )

    def stage_progress(self) -> tuple[str, float, float] | None:
        """The event as a stage's ``progress(description, done, total)`` arguments."""
        if self.kind == "step" and self.steps:
            return (
                f"epoch {self.epoch}/{self.epochs} loss {fmt_metric(self.loss)} acc "
                f"{self.accuracy or 0:.3f} {self.images_per_s or 0:.1f} img/s",
                self.step,
                self.steps,
            )
        if self.kind == "cache":
            return "caching frozen features", self.step, max(self.steps, 1)
        return ("LR range test", 0, 1) if self.kind == "lr_find" else None


def fmt_metric(x: float | None) -> str:
    """A loss or accuracy for people: 4 decimals, "nan" where it diverged (recorded as None)."""
    return "nan" if x is None else f"{x:.4f}"


ProgressFn = Callable[[TrainEvent], None]


SCHEMA_VERSION = 1


def resolve_device(spec: str) -> torch.device:
    """``--device`` on this machine (its value was checked by TrainConfig): exit 3 for
    ``cuda`` without CUDA; ``auto`` picks CUDA when present."""
    import torch

    if spec == CUDA and not torch.cuda.is_available():
        raise EnvironmentUnavailable(
            "--device cuda: CUDA is not available on this machine (no GPU or driver, or a CPU "
            "build of torch); use --device cpu or --device auto"
        )
    if spec == AUTO:
        spec = CUDA if torch.cuda.is_available() else CPU
    return torch.device(spec)


def default_run_dir(dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(DEFAULT_ARTIFACTS_DIR) / f"{dataset}-{stamp}"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def check_finite(loss: float, *, epoch: int, step: int, lr: float, run_dir: Path) -> None:
    """Stop with a clear message when training diverged (NaN/Inf loss)."""
    if not math.isfinite(loss):
        raise GateFailed(
            f"training diverged: loss is {loss} at epoch {epoch} step {step} (lr {lr:.3g}). "
            f"Lower --lr or add gradient clipping; the last good checkpoint and "
            f"model.safetensors in {run_dir} were kept"
        )


class TrainingDivergedWarning(UserWarning):
    """The training loss looks diverged (but is still finite, so training goes on)."""


# A mean loss this many times that of a uniform guess (ln C) means the weights blew up: with
# --lr auto on 10 images the loss reached 34,076 (ln 10 = 2.3) while training went on quietly.
DIVERGED_FACTOR = 10.0


def divergence_warning(train_losses: list[float | None], num_classes: int) -> str | None:
    """Why the last epoch's training loss looks diverged, or None: above ``DIVERGED_FACTOR`` x
    a uniform guess's loss, or above ``DIVERGED_FACTOR`` x the first epoch's."""
    if not train_losses or train_losses[-1] is None:
        return None  # a non-finite loss already stopped training (check_finite)
    last, first = train_losses[-1], train_losses[0]
    chance = math.log(max(2, num_classes))
    if last > DIVERGED_FACTOR * chance:
        return (
            f"the training loss {last:.4g} is over {DIVERGED_FACTOR:g}x that of a uniform guess "
            f"({chance:.3g}): training is diverging; lower --lr (or add --grad-clip)"
        )
    if first is not None and len(train_losses) > 1 and last > DIVERGED_FACTOR * first:
        return (
            f"the training loss rose from {first:.4g} (epoch 1) to {last:.4g}: training is "
            "diverging; lower --lr (or add --grad-clip)"
        )
    return None

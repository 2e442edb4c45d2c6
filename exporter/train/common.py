"""Pieces the training loop and its facade share: events, settings checks, the schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

import numpy as np

from exporter.core.config import AUGMENT_MODES, DEFAULT_ARTIFACTS_DIR, LR_AUTO, RECIPES, TrainConfig
from exporter.core.errors import EnvironmentUnavailable, GateFailed, UsageError

__all__ = ["TrainEvent", "lr_factor"]


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


ProgressFn = Callable[[TrainEvent], None]


SCHEMA_VERSION = 1
OPTIMIZERS = ("sgd", "adamw")
CACHE_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")


def validate(cfg: TrainConfig) -> None:
    """Reject bad settings with a message naming the option (exit 2)."""
    checks = [
        (cfg.epochs >= 1, f"--epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        (_valid_lr(cfg.lr), f"--lr must be a positive number or 'auto', got {cfg.lr}"),
        (cfg.recipe in RECIPES, f"--recipe must be one of {RECIPES}, got {cfg.recipe!r}"),
        (
            cfg.data.augment in AUGMENT_MODES,
            f"--augment must be one of {AUGMENT_MODES}, got {cfg.data.augment!r}",
        ),
        (
            cfg.recipe != "finetune" or cfg.epochs >= 2 or cfg.unfreeze_at is not None,
            "--recipe finetune needs --epochs >= 2 (head epochs, then unfrozen epochs)",
        ),
        (
            cfg.freeze_epochs is None or 1 <= cfg.freeze_epochs < cfg.epochs,
            f"--freeze-epochs must be in 1..{cfg.epochs - 1} (fewer than --epochs), "
            f"got {cfg.freeze_epochs}",
        ),
        (
            cfg.freeze_epochs is None or cfg.recipe == "finetune",
            "--freeze-epochs applies to --recipe finetune only",
        ),
        (cfg.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}"),
        (cfg.cache_features in CACHE_MODES, f"--cache-features must be one of {CACHE_MODES}"),
        (cfg.device in DEVICES, f"--device must be one of {DEVICES}"),
        (cfg.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 <= cfg.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (cfg.warmup_epochs is None or cfg.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, "--grad-clip must be > 0"),
        (cfg.backbone_lr_mult > 0, "--backbone-lr-mult must be > 0"),
        (cfg.save_every >= 1, f"--save-every must be >= 1, got {cfg.save_every}"),
        (cfg.patience is None or cfg.patience >= 1, "--patience must be >= 1"),
        (cfg.workers is None or cfg.workers >= 0, "--workers must be >= 0"),
        (
            cfg.unfreeze_at is None or 1 <= cfg.unfreeze_at <= cfg.epochs,
            f"--unfreeze-at must be an epoch in 1..{cfg.epochs}, got {cfg.unfreeze_at}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if cfg.unfreeze_at is not None:
        from exporter.model.vgg import parse_unfreeze_from

        parse_unfreeze_from(cfg.unfreeze_from)


def _valid_lr(lr: float | str) -> bool:
    if lr == LR_AUTO:
        return True
    return isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)


def resolve_device(spec: str) -> torch.device:
    import torch

    if spec == "cuda" and not torch.cuda.is_available():
        raise EnvironmentUnavailable(
            "--device cuda: CUDA is not available on this machine (no GPU or driver, or a CPU "
            "build of torch); use --device cpu or --device auto"
        )
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(spec)


def default_run_dir(dataset: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(DEFAULT_ARTIFACTS_DIR) / f"{dataset}-{stamp}"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def check_finite(loss: float, *, epoch: int, step: int, lr: float, run_dir: Path) -> None:
    """Stop with a clear message when training diverged (NaN/Inf loss)."""
    if not math.isfinite(loss):
        raise GateFailed(
            f"training diverged: loss is {loss} at epoch {epoch} step {step} (lr {lr:.3g}). "
            f"Lower --lr or add gradient clipping; the last good checkpoint and "
            f"model.safetensors in {run_dir} were kept"
        )


def confusion(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix: rows are true classes, columns predicted ones."""
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )

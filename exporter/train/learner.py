"""The model and what updates it: optimizer, grad scaler, autocast and the DDP wrapping;
and validation.

Phase 1 trains the head path (``avgpool → flatten → classifier``) on the frozen trunk's
outputs; :meth:`Learner.unfreeze` (phase 2) makes the top of the trunk trainable in a new
param group and wraps anew, so DDP's reducer always holds exactly the parameters that get
gradients. Imported by the loop once training starts (it imports torch).

Validation is sharded: each rank scores its slice (``Batches.val``), then the confusion matrix
(int64) and the summed loss are all-reduced; accuracy, per-class accuracy and the loss come
from the sums. The forward uses the plain model, not DDP: evaluation has no gradients to
synchronise, and the slices may differ in size by one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from exporter.core.config import TrainConfig
from exporter.model.vgg import unfreeze_from
from exporter.train.checkpoint import restore_scaler
from exporter.train.device_setup import amp_dtype
from exporter.train.distributed import DistContext
from exporter.train.modules import HeadPath, install_sample_dropout

__all__ = ["Learner", "make_optimizer", "summarize"]


def make_optimizer(
    groups: list[dict[str, Any]],
    name: str,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """``--optimizer`` (``sgd`` or ``adamw``) over ``groups``: the run's and the LR finder's."""
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused
        )
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)


class Learner:
    """One rank's model on its device, its optimizer and the forward that trains."""

    def __init__(
        self, model: nn.Module, *, cfg: TrainConfig, dist: DistContext, peak_lr: float | None
    ) -> None:
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.model = model
        install_sample_dropout(model)  # masks keyed per image: any batch split trains alike
        self.channels_last = self.device.type == "cuda" and cfg.channels_last
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.head_path = HeadPath(model)
        self.amp_dtype = amp_dtype(self.device.type, cfg.amp, device_index=self.device.index)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        lr = peak_lr or 0.0  # "auto": set by the range test before the first step
        head = [p for p in model.parameters() if p.requires_grad]
        # Fused kernels make one pass over each parameter instead of ~10 elementwise passes;
        # with VGG16's 120M-parameter head the update is memory-bound and was half of every
        # CPU step (2 cores, batch 64: AdamW step 390 -> 40 ms, SGD 185 -> 30 ms).
        self.optimizer = make_optimizer(
            [{"params": head, "lr": lr, "initial_lr": lr}],
            cfg.optimizer,
            lr=lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            fused=True if self.device.type in ("cpu", "cuda") else None,
        )
        self.unfrozen: list[str] = []
        self.head_fn: Any = None  # the forwards that train: set by wrap()
        self.trunk_fn: Any = None
        self.forward: Any = None

    def wrap(self) -> None:
        """Wrap what trains now in DDP: the head path (trunk frozen) or the whole model."""
        compile_fn = torch.compile if self.cfg.compile else (lambda m: m)
        self.head_fn = self.forward = None  # drop the old DDP (its reducer's hooks) first
        if self.unfrozen:
            self.head_fn = self.head_path
            self.trunk_fn = self.model.features
            self.forward = compile_fn(self.dist.wrap(self.model))
        else:
            # Trunk and head compiled apart, so --compile also speeds up phase 1 (frozen trunk).
            self.head_fn = compile_fn(self.dist.wrap(self.head_path))
            self.trunk_fn = compile_fn(self.model.features)
            self.forward = compile_fn(self.model)

    def unfreeze(self, first: int, base_lr: float) -> list[str]:
        """Phase 2: ``features[first:]`` trains in a new param group at ``base_lr``."""
        flipped = unfreeze_from(self.model, first)
        named = dict(self.model.named_parameters())
        self.optimizer.add_param_group(
            {"params": [named[n] for n in flipped], "lr": base_lr, "initial_lr": base_lr}
        )
        self.unfrozen = flipped
        if self.head_fn is not None:
            self.wrap()  # a live DDP must not see requires_grad change: wrap anew
        return flipped

    def set_peak_lr(self, lr: float) -> None:
        """The range test's choice, before the first step (one group: the head)."""
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"] = lr

    def schedule(self, factor: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor

    @property
    def lr(self) -> float:
        """The head's LR now."""
        return float(self.optimizer.param_groups[0]["lr"])

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def inputs(self, x: torch.Tensor, cached: bool) -> torch.Tensor:
        """Images (or cached trunk outputs) on the device, in the model's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and not cached:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, x: torch.Tensor, cached: bool) -> torch.Tensor:
        """The training forward: cached trunk outputs, frozen trunk, or the unfrozen model."""
        if cached:  # the head path, through DDP while it is the part that trains
            return self.head_fn(x)
        if not self.unfrozen:
            with torch.no_grad():  # nothing to learn there: skip its autograd graph
                f = self.trunk_fn(x)
            return self.head_fn(f)
        return self.forward(x)

    def evaluate(
        self, batches: Iterable[tuple[Any, Any]], *, cached: bool, class_names: list[str]
    ) -> dict[str, Any]:
        """Score this rank's ``batches`` (trunk outputs when ``cached``), summed over the ranks."""
        model, k = self.model, len(class_names)
        model.eval()
        cm = np.zeros((k, k), dtype=np.int64)
        loss_sum = 0.0
        with torch.no_grad():
            for x, y in batches:
                x, y = self.inputs(x, cached), y.to(self.device)
                with self.autocast():
                    logits = self.head_path(x) if cached else model(x)
                logits = logits.float()
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                pred = logits.argmax(1).cpu().numpy()
                cell = y.cpu().numpy() * k + pred  # row: true class, column: predicted
                cm += np.bincount(cell, minlength=k * k).reshape(k, k)
        model.train()
        cm = self.dist.all_reduce_sum(cm)
        loss_sum = float(self.dist.all_reduce_sum(np.array([loss_sum]))[0])
        return summarize(cm, loss_sum, class_names)

    def update(self, loss: torch.Tensor) -> None:
        """Backward (scaled), clip, step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state(self) -> dict[str, Any]:
        """The checkpoint's model, optimizer and scaler."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state` (unfreeze first when the checkpoint was in phase 2)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_scaler(self.scaler, state["scaler"])


def summarize(cm: np.ndarray, loss_sum: float, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, mean loss, per-class accuracy and the matrix from summed counts."""
    total = int(cm.sum())
    support = cm.sum(1)
    per_class = {
        name: (float(cm[i, i] / support[i]) if support[i] else None)
        for i, name in enumerate(class_names)
    }
    return {
        "loss": loss_sum / max(total, 1),
        "accuracy": float(np.trace(cm) / max(total, 1)),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "count": total,
    }

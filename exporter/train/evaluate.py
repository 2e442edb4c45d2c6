"""Validation, sharded: each rank scores its slice (``Batches.val``), the counts are summed.

The confusion matrix (int64) and the summed loss are all-reduced; accuracy, per-class accuracy
and the loss come from the sums. The forward uses the plain model, not DDP: evaluation has no
gradients to synchronise, and the slices may differ in size by one batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from exporter.train.learner import Learner

__all__ = ["evaluate", "summarize"]


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


def evaluate(
    learner: Learner, batches: Iterable[tuple[Any, Any]], *, cached: bool, class_names: list[str]
) -> dict[str, Any]:
    """Score this rank's ``batches`` (trunk outputs when ``cached``), summed over the ranks."""
    import torch

    model, dist = learner.model, learner.dist
    model.eval()
    k = len(class_names)
    cm = np.zeros((k, k), dtype=np.int64)
    loss_sum = 0.0
    with torch.no_grad():
        for x, y in batches:
            x, y = learner.inputs(x, cached), y.to(learner.device)
            with learner.autocast():
                logits = learner.head_path(x) if cached else model(x)
            logits = logits.float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            pred = logits.argmax(1).cpu().numpy()
            cell = y.cpu().numpy() * k + pred  # row: true class, column: predicted
            cm += np.bincount(cell, minlength=k * k).reshape(k, k)
    model.train()
    cm = dist.all_reduce_sum(cm)
    loss_sum = float(dist.all_reduce_sum(np.array([loss_sum]))[0])
    return summarize(cm, loss_sum, class_names)

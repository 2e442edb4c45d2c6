"""Validation, sharded: each rank scores its own slice, the counts are summed exactly.

Every rank evaluates a contiguous slice of the validation split (:func:`shard_range`: no
padding, so no image is counted twice); the confusion matrix (int64) and the summed loss are
all-reduced, and accuracy, per-class accuracy and the loss come from the sums. The forward
uses the plain model, not DDP: evaluation has no gradients to synchronise, and the slices may
differ in size by one batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exporter.train.common import confusion


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


class EvalMixin:
    """Validation of :class:`~exporter.train.loop.Trainer`."""

    def _val_batches(self, cached: bool) -> Any:
        import torch
        from torch.utils.data import DataLoader

        from exporter.data.datasets import SubsetDataset
        from exporter.train.distributed import shard_range

        bs = max(1, self.cfg.batch_size // self.dist.world_size)
        if cached:  # the val cache holds this rank's slice only
            n = len(self.val_cache.labels)
            return (self.val_cache.batch(np.arange(i, min(n, i + bs))) for i in range(0, n, bs))
        val = self.bundle.val
        start, stop = shard_range(len(val), self.dist.rank, self.dist.world_size)
        if self.dist.enabled:
            val = SubsetDataset(val, np.arange(start, stop))
        if len(val) == 0:
            return iter(())
        return self._loaders.setdefault(
            "val",
            DataLoader(
                val,
                batch_size=bs,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(0),
            ),
        )

    def _evaluate(self, cached: bool) -> dict[str, Any]:
        import torch

        self.model.eval()
        k = self.bundle.num_classes
        cm = np.zeros((k, k), dtype=np.int64)
        loss_sum = 0.0
        with torch.no_grad():
            for x, y in self._val_batches(cached):
                x, y = x.to(self.device), y.to(self.device)
                if self.channels_last and not cached:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    logits = self.head_path(x) if cached else self.model(x)
                logits = logits.float()
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                pred = logits.argmax(1).cpu().numpy()
                cm += confusion(pred, y.cpu().numpy(), k)
        self.model.train()
        cm = self.dist.all_reduce_sum(cm)
        loss_sum = float(self.dist.all_reduce_sum(np.array([loss_sum]))[0])
        return summarize(cm, loss_sum, self.bundle.class_names)

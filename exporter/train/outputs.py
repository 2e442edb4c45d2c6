"""What a run writes besides its checkpoint: the best weights, train.json and curves.png.

Rank 0 alone writes (every write atomic, through ``core/fsio.py``); the other ranks build the
same record and return it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.config import LR_AUTO
from exporter.core.runfolder import CURVES_PNG, TRAIN_JSON, WEIGHTS_NAME
from exporter.train.common import SCHEMA_VERSION, _finite


class RecordMixin:
    """Files of :class:`~exporter.train.loop.Trainer`."""

    def _save_weights(self) -> None:
        if not self.dist.is_main:
            return
        from safetensors.torch import save_file

        from exporter.core.fsio import require_space, write_with
        from exporter.train.checkpoint import SERIALIZATION_SLACK, tensor_bytes

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        needed = tensor_bytes(state) + SERIALIZATION_SLACK

        def save(tmp: Path) -> None:
            require_space(tmp.parent, needed)  # refused before a byte is written
            save_file(state, str(tmp))

        write_with(self.run_dir / WEIGHTS_NAME, save, size_hint=needed)

    def _config_dict(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d["model"] = {
            "arch": "vgg16",
            "weights": self.cfg.weights,
            "num_classes": self.bundle.num_classes,
        }
        return d

    def _distributed_block(self) -> dict[str, Any]:
        """World size, backend, each rank's share of the batch and its training images/s."""
        block = self.dist.describe()
        block["global_batch_size"] = self.cfg.batch_size
        block["per_rank_batch_size"] = self.cfg.batch_size // self.dist.world_size
        last = self.history[-1] if self.history else {}
        block["per_rank_images_per_s"] = last.get(
            "per_rank_images_per_s", [last["images_per_s"]] if last else []
        )
        return block

    def _write_record(self, total_seconds: float | None) -> dict[str, Any]:
        from exporter.core.envinfo import environment
        from exporter.core.fsio import write_json
        from exporter.train.curves import plot_curves

        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "command": "train",
            "status": self.status,
            "config": self._config_dict(),
            "environment": environment(str(self.device)),
            "distributed": self._distributed_block(),
            "dataset": self.bundle.describe(),
            "preprocessing": self.bundle.preprocessing.to_dict(),
            "epochs": self.history,
            "best": {
                "epoch": self.best["epoch"],
                "val_accuracy": self.best["val_accuracy"] if self.best["epoch"] else None,
                "val_loss": _finite(self.best["val_loss"]),
            },
            "per_class_accuracy": self.best_extra.get("per_class_accuracy"),
            "confusion_matrix": self.best_extra.get("confusion_matrix"),
            "unfrozen_params": self.unfrozen,
            "feature_cache": self.cache_info,
            "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
            "steps_per_epoch": self.steps_per_epoch,
            "recipe": {
                "name": self.cfg.recipe,
                "unfreeze_at": self.unfreeze_at,
                "phases": [p.to_dict() for p in self.phases],
                "peak_lr": self.peak_lr,
                "lr_source": "lr_finder" if self.cfg.lr == LR_AUTO else "--lr",
                "augment": self.augment,
                "augment_reason": self.augment_reason,
            },
            "lr_finder": self.lr_finder,
        }
        if total_seconds is not None:
            record["total_seconds"] = round(total_seconds, 3)
        if self.dist.is_main:
            write_json(self.run_dir / TRAIN_JSON, record)
            if self.history:
                plot_curves(self.history, self.run_dir / CURVES_PNG)
        return record

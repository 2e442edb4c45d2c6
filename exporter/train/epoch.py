"""One training epoch: this rank's share of every global batch, the step, the epoch's record.

The global batch (``--batch-size``) is split evenly over the ranks. The epoch's order is
``DistributedSampler``'s shuffle of (seed, epoch) (``set_epoch`` every epoch), and rank ``r``
takes positions ``r, r + W, r + 2W, ...`` of it, so the ranks' step-``k`` shares together are
exactly the images a single process would train on at step ``k``. The sampler pads the order
to a multiple of the world size with repeated images; those pads have weight 0 in the loss
and are left out of every count. The loss of a share is its images' summed loss divided by
the *global* batch's real image count, times the world size (DDP averages over ranks), so
the gradient is the global batch's mean however it was split.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.train.common import _finite, check_finite, divergence_warning
from exporter.train.recipe import phase_lr_factor
from exporter.train.stop import _Stop

if TYPE_CHECKING:
    import torch


class TrainingDivergedWarning(UserWarning):
    """The training loss looks diverged (but is still finite, so training goes on)."""


class EpochMixin:
    """The epoch and the step of :class:`~exporter.train.loop.Trainer`."""

    @staticmethod
    def _zero_sums() -> dict[str, float]:
        # Global sums (all ranks), and this rank's own images and seconds (its throughput).
        return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "local_seen": 0}

    def _index_batches(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's (dataset indices, is-real mask) per step of ``epoch``, from ``self.step``."""
        from torch.utils.data import DistributedSampler

        n = len(self.bundle.train)
        world, rank = self.dist.world_size, self.dist.rank
        sampler = DistributedSampler(
            self.bundle.train, num_replicas=world, rank=rank, shuffle=True, seed=self.cfg.seed
        )
        sampler.set_epoch(epoch)
        local = np.fromiter(iter(sampler), dtype=np.int64)
        real = rank + world * np.arange(len(local)) < n  # positions past n are the padding
        share = self.cfg.batch_size // world
        starts = range(0, len(local), share)
        return [(local[s : s + share], real[s : s + share]) for s in starts][self.step :]

    def _batches(self, epoch: int, cached: bool) -> Iterator[tuple[Any, Any, Any, Any]]:
        """``(x, y, indices, real)`` of this rank's shares of ``epoch`` from ``self.step`` on."""
        import torch
        from torch.utils.data import DataLoader

        index_batches = self._index_batches(epoch)
        if cached:
            for idx, real in index_batches:
                x, y = self.train_cache.batch(idx)
                yield x, y, idx, real
            return
        self._epoch_batches.set([idx.tolist() for idx, _ in index_batches])
        if "train" not in self._loaders:  # one loader: its workers live across epochs
            self._loaders["train"] = DataLoader(
                self.bundle.train,
                batch_sampler=self._epoch_batches,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * self.dist.rank),
            )
        loader = self._loaders["train"]
        for (x, y), (idx, real) in zip(loader, index_batches, strict=True):
            yield x, y, idx, real

    def _logits(self, x: torch.Tensor, cached: bool) -> torch.Tensor:
        import torch

        if cached:
            return self._head(x)
        if not self.unfrozen:
            with torch.no_grad():  # nothing to learn there: skip its autograd graph
                f = self.trunk_fn(x)
            return self._head(f)
        return self.forward(x)

    def _train_step(self, x: Any, y: Any, idx: np.ndarray, real: np.ndarray, cached: bool) -> bool:
        """One optimizer step on this rank's share; True when a rank asked to stop."""
        import torch

        from exporter.train.modules import set_dropout_keys

        cfg, epoch = self.cfg, self.epoch
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * phase_lr_factor(self.global_step, self.phases)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last and not cached:
            x = x.contiguous(memory_format=torch.channels_last)
        set_dropout_keys(self.model, seed=cfg.seed, epoch=epoch, indices=torch.as_tensor(idx))
        weight = torch.as_tensor(real, dtype=torch.float32, device=self.device)
        n = len(self.bundle.train)
        count = min(cfg.batch_size, n - self.step * cfg.batch_size)  # real images, all ranks
        with self._autocast():
            logits = self._logits(x, cached)
            per = torch.nn.functional.cross_entropy(
                logits.float(), y, reduction="none", label_smoothing=cfg.label_smoothing
            )
            loss_sum = (per * weight).sum()
            loss = loss_sum * (self.dist.world_size / count)
        right = ((logits.argmax(1) == y).float() * weight).sum()
        # One small all-reduce per step: exact global metrics, a NaN seen by every rank at
        # once, and a signal on any rank stops all of them at the same step.
        loss_v, right_v = torch.stack([loss_sum.detach(), right]).tolist()  # one device sync
        local = np.array([loss_v, right_v, float(real.sum())])
        stats = self.dist.all_reduce_sum(np.concatenate([local, self._signal_flags()]))
        check_finite(
            stats[0] / count,
            epoch=epoch,
            step=self.step + 1,
            lr=self.optimizer.param_groups[0]["lr"],
            run_dir=self.run_dir,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        self.step += 1
        self.sums["loss"] += float(stats[0])
        self.sums["correct"] += round(float(stats[1]))
        self.sums["seen"] += round(float(stats[2]))
        self.sums["local_seen"] += int(real.sum())
        return self._adopt_flags(stats[3:])

    def _run_epoch(self) -> None:
        epoch = self.epoch
        if self.unfreeze_at is not None and epoch >= self.unfreeze_at and not self.unfrozen:
            self.unfreeze()
        t_epoch = time.perf_counter()
        cached = self._use_cache()
        if cached and self.train_cache is None:
            self._build_caches()
            self._sync_stop()
        if cached:
            self.cache_info["epochs"] = sorted({*self.cache_info["epochs"], epoch})
        self.model.train()
        t_steps = time.perf_counter()
        for x, y, idx, real in self._batches(epoch, cached):
            stop = self._train_step(x, y, idx, real, cached)
            elapsed = self.sums["seconds"] + time.perf_counter() - t_steps
            seen = max(1, self.sums["seen"])
            self._emit(
                "step",
                epoch=epoch,
                step=self.step,
                steps=self.steps_per_epoch,
                loss=self.sums["loss"] / seen,
                accuracy=self.sums["correct"] / seen,
                images_per_s=self.sums["seen"] / max(elapsed, 1e-9),
            )
            if stop or (self._signum is not None and not self.dist.enabled):
                self.sums["seconds"] = elapsed
                raise _Stop
        train_seconds = self.sums["seconds"] + time.perf_counter() - t_steps
        val = self._evaluate(cached)
        self._finish_epoch(val, train_seconds, time.perf_counter() - t_epoch, cached)

    def _finish_epoch(
        self, val: dict[str, Any], train_seconds: float, epoch_seconds: float, cached: bool
    ) -> None:
        """Record the epoch, keep the best weights, checkpoint, early stop (rank 0 writes)."""
        cfg, epoch = self.cfg, self.epoch
        seen = max(1, self.sums["seen"])
        own = round(self.sums["local_seen"] / max(train_seconds, 1e-9), 2)
        metrics = {
            "epoch": epoch,
            "phase": 2 if self.unfrozen else 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": _finite(self.sums["loss"] / seen),
            "train_accuracy": self.sums["correct"] / seen,
            "val_loss": _finite(val["loss"]),
            "val_accuracy": val["accuracy"],
            "images_per_s": round(self.sums["seen"] / max(train_seconds, 1e-9), 2),
            "seconds": round(epoch_seconds + self.sums["seconds"], 3),
            "feature_cache": cached,
        }
        if self.dist.enabled:
            metrics["per_rank_images_per_s"] = self.dist.gather_object(own)
        warning = divergence_warning(
            [*(e.get("train_loss") for e in self.history), metrics["train_loss"]],
            self.bundle.num_classes,
        )
        if warning is not None:  # recorded in train.json's epoch, and shown by the CLI
            metrics["warning"] = f"epoch {epoch}: {warning}"
            if self.dist.is_main:
                warnings.warn(metrics["warning"], TrainingDivergedWarning, stacklevel=2)
        self.history.append(metrics)
        self.sums = self._zero_sums()
        if val["accuracy"] > self.best["val_accuracy"]:
            self.best = {"epoch": epoch, "val_accuracy": val["accuracy"], "val_loss": val["loss"]}
            self.best_extra = {
                "per_class_accuracy": val["per_class_accuracy"],
                "confusion_matrix": val["confusion_matrix"],
            }
            self.bad_epochs = 0
            self._save_weights()
        else:
            self.bad_epochs += 1
        last = epoch == cfg.epochs
        if cfg.patience is not None and self.bad_epochs >= cfg.patience and not last:
            self.status = "early_stopped"
        # The checkpoint holds the state *after* this epoch: resume starts the next one.
        self.epoch, self.step = epoch + 1, 0
        if last or self.status != "running" or epoch % cfg.save_every == 0:
            self.save_checkpoint()
        self.epoch = epoch
        self._write_record(None)
        self._emit("epoch", epoch=epoch, steps=self.steps_per_epoch, metrics=metrics)

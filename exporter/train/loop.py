"""The training loop behind :func:`exporter.train.fit`, readable top to bottom.

:meth:`Trainer.run`: set up, the ``--lr auto`` range test, then epoch after epoch: steps,
validation, the record, the checkpoint. The Trainer holds where the run stands (epoch, step,
the epoch's sums, status); the rest lives in collaborators with their own small state:
``Learner`` (model, optimizer, scaler, autocast, DDP, validation), ``Batches`` (this rank's
batches: images, or the frozen trunk's cached outputs), ``StopSignal`` (SIGINT/SIGTERM,
agreed by every rank), ``Recipe`` (phases, peak LR) and ``History`` (epochs, best, early stop).
Under torchrun every rank runs the same Trainer (``distributed.py``); rank 0 alone writes.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.config import TrainConfig
from exporter.core.errors import GateFailed, UsageError
from exporter.core.runfolder import LR_FIND_PNG
from exporter.model.shape import parse_unfreeze_from
from exporter.train.common import (
    SCHEMA_VERSION,
    ProgressFn,
    TrainEvent,
    TrainingDivergedWarning,
    _finite,
    check_finite,
    default_run_dir,
    resolve_device,
)
from exporter.train.device_setup import cap_torch_threads, determinism
from exporter.train.distributed import DistContext
from exporter.train.outputs import History, plot_lr_find, save_weights, write_record
from exporter.train.recipe import Recipe, phase_lr_factor
from exporter.train.stop import Stop, StopSignal

__all__ = ["Trainer"]


def _zero_sums() -> dict[str, float]:
    # Global sums (all ranks), and this rank's own images and seconds (its throughput).
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "local_seen": 0}


class Trainer:
    """One training run; :meth:`run` does the work and returns the train.json record."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        progress: ProgressFn | None,
        resume: bool,
        dist: DistContext | None = None,
    ) -> None:
        self.dist = dist if dist is not None else DistContext(device=resolve_device(cfg.device))
        self.device = self.dist.device
        if resume and not cfg.out:
            raise UsageError("resume needs the run folder (--resume RUN)")
        if self.dist.enabled and not cfg.out:
            # Each rank would stamp its own time: the folder must be named up front.
            raise UsageError("training on several processes needs --out RUN (one shared name)")
        self.run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.data.source)
        self.cfg = replace(cfg, out=str(self.run_dir))
        self.progress, self.resume = progress, resume
        self.stop = StopSignal(self.dist)
        self.history = History()
        self.status = "running"
        self.epoch, self.step, self.global_step = 1, 0, 0  # where the run stands
        self.sums = _zero_sums()

    # --- the run, top to bottom -------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cap_torch_threads()
        t0 = time.perf_counter()
        with self.stop.installed(), determinism(self.cfg.deterministic, self.device.type):
            self._setup()
            info = {"run_dir": str(self.run_dir), "device": str(self.device)}
            info["world_size"] = self.dist.world_size
            self._emit("start", epoch=self.epoch, steps=self.steps_per_epoch, info=info)
            try:
                self.stop.sync()
                if self.recipe.peak_lr is None:
                    self._find_lr()
                    self.stop.sync()
                while self.epoch <= self.cfg.epochs and self.status == "running":
                    self._train_epoch()
                    self.epoch, self.step = self.epoch + 1, 0
                    self.stop.sync()
            except Stop:
                # Every rank stops at the same step; rank 0 saves, the others wait for it.
                self.status = "interrupted"
                self.save_checkpoint()
                self._write_record(time.perf_counter() - t0)
                self.dist.barrier()
                raise self.stop.interrupted(
                    epoch=self.epoch, step=self.step, run_dir=self.run_dir
                ) from None
            except GateFailed:
                # Diverged: model.safetensors and checkpoint/ still hold the last good state.
                self.status = "diverged"
                self._write_record(time.perf_counter() - t0)
                self.dist.barrier()
                raise
            finally:
                self.batches.close()
        if self.status == "running":
            self.status = "completed"
        record = self._write_record(time.perf_counter() - t0)
        self.dist.barrier()  # the others leave only once rank 0 has written everything
        self._emit("done", info={"run_dir": str(self.run_dir)})
        return record

    def _setup(self) -> None:
        """Data, model, optimizer, caches; the checkpoint's state when resuming."""
        import random

        import torch

        from exporter.data.datasets import build_datasets
        from exporter.model.vgg import build_vgg16
        from exporter.train.batches import Batches
        from exporter.train.learner import Learner

        cfg, dist = self.cfg, self.dist
        # The same seed on every rank: the frozen trunk is not in DDP, so its random init
        # (--weights none) must come out the same everywhere.
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        weights = "none" if self.resume else cfg.weights  # resume loads its own weights
        with dist.local_main_first():
            self.bundle = build_datasets(cfg.data)
            model = build_vgg16(num_classes=self.bundle.num_classes, weights=weights)
        if dist.rank:  # augmentation draws differ per rank; rank 0 keeps the 1-process stream
            torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)
        # Steps count global batches: the same for any number of processes.
        self.steps_per_epoch = math.ceil(len(self.bundle.train) / cfg.batch_size)
        self.recipe = Recipe.resolve(cfg, self.steps_per_epoch)
        self.learner = Learner(model, cfg=cfg, dist=dist, peak_lr=self.recipe.peak_lr)
        self.batches = Batches(
            self.bundle,
            self.learner,
            cfg=cfg,
            augment=self.recipe.augment,
            check_stop=self.stop.check_here,
        )
        if self.resume:
            self._load_checkpoint()
        self.learner.wrap()

    def _find_lr(self) -> None:
        """``--lr auto``: the range test on rank 0 (the images one process would use) picks
        the peak LR, and every rank takes it."""
        from exporter.train.lr_finder import range_test

        if self.batches.cacheable and self.batches.train_cache is None:
            self.batches.build_cache(self._cache_progress)  # training uses it next
        result = None
        if self.dist.is_main:
            self._emit("lr_find", epoch=self.epoch)
            result = range_test(self.learner, self.batches, self.cfg)
            plot_lr_find(result, self.run_dir / LR_FIND_PNG)
        recipe = self.recipe
        recipe.peak_lr, recipe.lr_finder = self.dist.broadcast_object(
            (result.chosen_lr, result.to_dict()) if result is not None else None
        )
        self.learner.set_peak_lr(recipe.peak_lr)

    def _train_epoch(self) -> None:
        """Unfreeze when due, this rank's steps (a stop between any two), then validation."""
        epoch = self.epoch
        due = self.recipe.unfreeze_at is not None and epoch >= self.recipe.unfreeze_at
        if due and not self.learner.unfrozen:
            self.unfreeze()
        t_epoch = time.perf_counter()
        batches = self.batches
        cached = batches.cacheable
        if cached and batches.train_cache is None:
            batches.build_cache(self._cache_progress)
            self.stop.sync()
        if cached:
            batches.cache_info["epochs"] = sorted({*batches.cache_info["epochs"], epoch})
        self.learner.model.train()
        t_steps = time.perf_counter()
        for x, y, idx, real in batches.train(epoch, self.step, cached):
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
            if stop or self.stop.pending_here():
                self.sums["seconds"] = elapsed
                raise Stop
        train_seconds = self.sums["seconds"] + time.perf_counter() - t_steps
        names = self.bundle.class_names
        val = self.learner.evaluate(batches.val(cached), cached=cached, class_names=names)
        self._finish_epoch(val, train_seconds, time.perf_counter() - t_epoch, cached)

    def _train_step(self, x: Any, y: Any, idx: np.ndarray, real: np.ndarray, cached: bool) -> bool:
        """One optimizer step on this rank's share; True when a rank asked to stop."""
        import torch

        from exporter.train.modules import set_dropout_keys

        cfg, learner = self.cfg, self.learner
        learner.schedule(phase_lr_factor(self.global_step, self.recipe.phases))
        x, y = learner.inputs(x, cached), y.to(self.device, non_blocking=True)
        keys = torch.as_tensor(idx)
        set_dropout_keys(learner.model, seed=cfg.seed, epoch=self.epoch, indices=keys)
        weight = torch.as_tensor(real, dtype=torch.float32, device=self.device)
        n = len(self.bundle.train)
        count = min(cfg.batch_size, n - self.step * cfg.batch_size)  # real images, all ranks
        with learner.autocast():
            logits = learner.logits(x, cached)
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
        stats = self.dist.all_reduce_sum(np.concatenate([local, self.stop.flags()]))
        mean = stats[0] / count
        check_finite(
            mean, epoch=self.epoch, step=self.step + 1, lr=learner.lr, run_dir=self.run_dir
        )
        learner.update(loss)
        self.global_step += 1
        self.step += 1
        self.sums["loss"] += float(stats[0])
        self.sums["correct"] += round(float(stats[1]))
        self.sums["seen"] += round(float(stats[2]))
        self.sums["local_seen"] += int(real.sum())
        return self.stop.adopt(stats[3:])

    def _finish_epoch(
        self, val: dict[str, Any], train_seconds: float, epoch_seconds: float, cached: bool
    ) -> None:
        """Record the epoch, keep the best weights, checkpoint, early stop (rank 0 writes)."""
        cfg, epoch, sums = self.cfg, self.epoch, self.sums
        seen = max(1, sums["seen"])
        metrics = {
            "epoch": epoch,
            "phase": 2 if self.learner.unfrozen else 1,
            "lr": self.learner.lr,
            "train_loss": _finite(sums["loss"] / seen),
            "train_accuracy": sums["correct"] / seen,
            "val_loss": _finite(val["loss"]),
            "val_accuracy": val["accuracy"],
            "images_per_s": round(sums["seen"] / max(train_seconds, 1e-9), 2),
            "seconds": round(epoch_seconds + sums["seconds"], 3),
            "feature_cache": cached,
        }
        if self.dist.enabled:
            own = round(sums["local_seen"] / max(train_seconds, 1e-9), 2)
            metrics["per_rank_images_per_s"] = self.dist.gather_object(own)
        self.sums = _zero_sums()
        if self.history.add(metrics, val, self.bundle.num_classes) and self.dist.is_main:
            save_weights(self.learner.model, self.run_dir)
        if "warning" in metrics and self.dist.is_main:  # also in train.json's epoch
            warnings.warn(metrics["warning"], TrainingDivergedWarning, stacklevel=2)
        last = epoch == cfg.epochs
        if cfg.patience is not None and self.history.bad_epochs >= cfg.patience and not last:
            self.status = "early_stopped"
        # The checkpoint holds the state *after* this epoch: resume starts the next one.
        self.epoch, self.step = epoch + 1, 0
        if last or self.status != "running" or epoch % cfg.save_every == 0:
            self.save_checkpoint()
        self.epoch = epoch
        self._write_record(None)
        self._emit("epoch", epoch=epoch, steps=self.steps_per_epoch, metrics=metrics)

    # --- the collaborators' shared moments ---------------------------------------------------

    def unfreeze(self) -> list[str]:
        """Phase 2: the top of the trunk trains (lr × mult); cached outputs are stale now."""
        peak = self.recipe.peak_lr
        assert peak is not None  # set by the config or the range test before epoch 1
        first = parse_unfreeze_from(self.cfg.unfreeze_from)
        flipped = self.learner.unfreeze(first, peak * self.cfg.backbone_lr_mult)
        self.batches.close()
        return flipped

    def _cache_progress(self, done: int, total: int) -> None:
        self._emit("cache", step=done, steps=total)

    def _emit(self, kind: str, **kw: Any) -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(TrainEvent(kind, epochs=self.cfg.epochs, **kw))

    # --- checkpoint and record ------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Every rank hands in its RNG state; rank 0 writes ``checkpoint/`` atomically."""
        from exporter.train.checkpoint import capture_rng, save_checkpoint

        rng = self.dist.gather_object(capture_rng())
        if not self.dist.is_main:
            return
        state = {
            **self.learner.state(),
            "scheduler": self.recipe.scheduler_state(self.global_step),
            "rng": rng[0],
            # Every rank's RNG (augmentation); restored only by a run of the same world size.
            "rng_ranks": rng,
            "epoch": self.epoch,
            "step": self.step,
            "loop": {
                "sums": {k: v for k, v in self.sums.items() if not k.startswith("local_")},
                **self.history.state(),
                "unfrozen": self.learner.unfrozen,
                "cache_info": self.batches.cache_info,
                "peak_lr": self.recipe.peak_lr,
                "lr_finder": self.recipe.lr_finder,
            },
            "config": self._config_dict(),
        }
        meta = {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch}
        meta["next"] = f"epoch {self.epoch} step {self.step}"
        meta["world_size"] = self.dist.world_size
        save_checkpoint(self.run_dir, state, meta)

    def _load_checkpoint(self) -> None:
        from exporter.train.checkpoint import load_checkpoint, restore_rank_rng

        state = load_checkpoint(self.run_dir)
        loop = state["loop"]
        self.recipe.peak_lr = loop.get("peak_lr", self.recipe.peak_lr)
        self.recipe.lr_finder = loop.get("lr_finder")
        if loop["unfrozen"]:
            self.unfreeze()
        self.learner.load(state)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["scheduler"]["global_step"])
        self.sums = {**_zero_sums(), **loop["sums"]}
        self.history = History.from_state(loop)
        self.batches.cache_info = dict(loop["cache_info"])
        restore_rank_rng(state, rank=self.dist.rank, world_size=self.dist.world_size)

    def _config_dict(self) -> dict[str, Any]:
        model = {"arch": "vgg16", "weights": self.cfg.weights}
        return {**self.cfg.to_dict(), "model": {**model, "num_classes": self.bundle.num_classes}}

    def _write_record(self, total_seconds: float | None) -> dict[str, Any]:
        """train.json's record now (rank 0 writes it, and curves.png)."""
        from exporter.core.envinfo import environment

        cfg, learner, amp = self.cfg, self.learner, self.learner.amp_dtype
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "command": "train",
            "status": self.status,
            "config": self._config_dict(),
            "environment": environment(str(self.device)),
            "distributed": self.dist.describe(cfg.batch_size, self.history.per_rank_rates()),
            "dataset": self.bundle.describe(),
            "preprocessing": self.bundle.preprocessing.to_dict(),
            **self.history.record(),
            "unfrozen_params": learner.unfrozen,
            "feature_cache": self.batches.cache_info,
            "amp_dtype": str(amp).replace("torch.", "") if amp else None,
            "steps_per_epoch": self.steps_per_epoch,
            "recipe": self.recipe.to_dict(),
            "lr_finder": self.recipe.lr_finder,
        }
        if total_seconds is not None:
            record["total_seconds"] = round(total_seconds, 3)
        if self.dist.is_main:
            write_record(self.run_dir, record)
        return record

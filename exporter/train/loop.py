"""The training loop behind :func:`exporter.train.fit` (state, steps, epochs, checkpoints)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import LR_AUTO, TrainConfig
from exporter.core.errors import GateFailed, Interrupted, UsageError
from exporter.core.runfolder import (
    CHECKPOINT_DIR,
    CURVES_PNG,
    LR_FIND_PNG,
    TRAIN_JSON,
    WEIGHTS_NAME,
)
from exporter.data.augment import resolve_augment
from exporter.train.common import (
    SCHEMA_VERSION,
    TrainEvent,
    _finite,
    check_finite,
    confusion,
    default_run_dir,
    resolve_device,
    validate,
)
from exporter.train.device_setup import EpochBatches, amp_dtype, determinism, make_head
from exporter.train.recipe import phase_lr_factor, plan_phases, unfreeze_epoch

if TYPE_CHECKING:
    import torch

    from exporter.train.common import ProgressFn


class _Stop(Exception):
    """Internal: a signal arrived; unwind to the point that saves the checkpoint."""


class Trainer:
    """One training run; :meth:`run` does the work and returns the train.json record."""

    def __init__(self, cfg: TrainConfig, *, progress: ProgressFn | None, resume: bool) -> None:
        validate(cfg)
        self.device = resolve_device(cfg.device)
        if resume and not cfg.out:
            raise UsageError("resume needs the run folder (--resume RUN)")
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.data.source)
        taken = (run_dir / TRAIN_JSON).exists() or (run_dir / CHECKPOINT_DIR).exists()
        if taken and not resume:
            raise UsageError(
                f"--out {run_dir} already holds a run; choose another --out, or continue "
                f"it with --resume {run_dir}"
            )
        self.cfg = replace(cfg, out=str(run_dir))
        self.run_dir = run_dir
        self.progress = progress
        self.resume = resume
        self._signum: int | None = None
        # Loop state (all of it goes into the checkpoint).
        self.epoch = 1
        self.step = 0
        self.global_step = 0
        self.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, "val_accuracy": -1.0, "val_loss": None}
        self.best_extra: dict[str, Any] = {}
        self.bad_epochs = 0
        self.unfrozen: list[str] = []
        self.cache_info: dict[str, Any] = {"used": False, "epochs": []}
        self.status = "running"
        # The peak LR of the head: the configured one, or what the range test chose.
        self.peak_lr: float | None = None if cfg.lr == LR_AUTO else float(cfg.lr)
        self.lr_finder: dict[str, Any] | None = None
        self.augment, self.augment_reason = resolve_augment(cfg.data)
        self.unfreeze_at = unfreeze_epoch(cfg)

    # --- setup ------------------------------------------------------------------------------

    def _setup(self) -> None:
        import random

        import torch

        from exporter.data.datasets import build_datasets
        from exporter.model.vgg import build_vgg16

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.bundle = build_datasets(cfg.data)
        weights = "none" if self.resume else cfg.weights  # resume loads its own weights
        self.model = build_vgg16(num_classes=self.bundle.num_classes, weights=weights)
        self.channels_last = self.device.type == "cuda" and cfg.channels_last
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = amp_dtype(self.device.type, cfg.amp, device_index=self.device.index)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        head = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.peak_lr or 0.0  # "auto": set by the range test before the first step
        group = {"params": head, "lr": lr, "initial_lr": lr}
        # Fused kernels make one pass over each parameter instead of ~10 elementwise passes;
        # with VGG16's 120M-parameter head the update is memory-bound and was half of every
        # CPU step (2 cores, batch 64: AdamW step 390 -> 40 ms, SGD 185 -> 30 ms).
        fused = True if self.device.type in ("cpu", "cuda") else None
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                [group],
                lr=lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                fused=fused,
            )
        else:
            self.optimizer = torch.optim.AdamW(
                [group], lr=lr, weight_decay=cfg.weight_decay, fused=fused
            )
        self.workers = (
            cfg.workers
            if cfg.workers is not None
            else (min(8, os.cpu_count() or 1) if self.device.type == "cuda" else 0)
        )
        n = len(self.bundle.train)
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.phases = plan_phases(cfg, self.steps_per_epoch)
        # Trunk and head compiled apart, so --compile also speeds up phase 1 (frozen trunk).
        self.trunk, self.head = self.model.features, make_head(self.model)
        if cfg.compile:
            self.trunk, self.head = torch.compile(self.trunk), torch.compile(self.head)
        self._loaders: dict[str, Any] = {}
        self._epoch_batches = EpochBatches()
        self.train_cache = self.val_cache = None
        if self.resume:
            self._load_checkpoint()

    def unfreeze(self) -> list[str]:
        """Phase 2: make the top of the trunk trainable in a new param group (lr × mult)."""
        from exporter.model.vgg import parse_unfreeze_from, unfreeze_from

        flipped = unfreeze_from(self.model, parse_unfreeze_from(self.cfg.unfreeze_from))
        named = dict(self.model.named_parameters())
        assert self.peak_lr is not None  # set by the config or the range test before epoch 1
        base = self.peak_lr * self.cfg.backbone_lr_mult
        self.optimizer.add_param_group(
            {"params": [named[n] for n in flipped], "lr": base, "initial_lr": base}
        )
        self.unfrozen = flipped
        self._free_cache()  # the trunk now changes: cached outputs are stale
        return flipped

    # --- checkpoint ---------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        from exporter.train.checkpoint import capture_rng

        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {
                "kind": "phased_warmup_cosine_per_step",
                "global_step": self.global_step,
                "total_steps": self.total_steps,
                "phases": [p.to_dict() for p in self.phases],
            },
            "rng": capture_rng(),
            "epoch": self.epoch,
            "step": self.step,
            "loop": {
                "sums": dict(self.sums),
                "history": self.history,
                "best": self.best,
                "best_extra": self.best_extra,
                "bad_epochs": self.bad_epochs,
                "unfrozen": self.unfrozen,
                "cache_info": self.cache_info,
                "peak_lr": self.peak_lr,
                "lr_finder": self.lr_finder,
            },
            "config": self._config_dict(),
        }

    def save_checkpoint(self) -> None:
        from exporter.train.checkpoint import save_checkpoint

        meta = {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch}
        meta["next"] = f"epoch {self.epoch} step {self.step}"
        save_checkpoint(self.run_dir, self._state(), meta)

    def _load_checkpoint(self) -> None:
        from exporter.train.checkpoint import load_checkpoint, restore_rng, restore_scaler

        state = load_checkpoint(self.run_dir)
        loop = state["loop"]
        self.peak_lr = loop.get("peak_lr", self.peak_lr)
        self.lr_finder = loop.get("lr_finder")
        if loop["unfrozen"]:
            self.unfreeze()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_scaler(self.scaler, state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.global_step = int(state["scheduler"]["global_step"])
        self.sums = dict(loop["sums"])
        self.history, self.best = list(loop["history"]), dict(loop["best"])
        self.best_extra, self.bad_epochs = dict(loop["best_extra"]), int(loop["bad_epochs"])
        self.cache_info = dict(loop["cache_info"])
        restore_rng(state["rng"])

    # --- the loop -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set a flag checked between steps; a second one aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._signum is not None:
                raise KeyboardInterrupt
            self._signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _check_stop(self) -> None:
        if self._signum is not None:
            raise _Stop

    def _emit(self, kind: str, **kw: Any) -> None:
        if self.progress is not None:
            self.progress(TrainEvent(kind, epochs=self.cfg.epochs, **kw))

    def run(self) -> dict[str, Any]:
        from exporter.core.fsio import clean_stale_temps

        created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.run_dir)
        clean_stale_temps(self.run_dir / CHECKPOINT_DIR)
        t0 = time.perf_counter()
        with self._signals(), determinism(self.cfg.deterministic, self.device.type):
            try:
                self._setup()
            except BaseException:
                # Bad data, weights or device: leave no empty run folder behind.
                if created and not any(self.run_dir.iterdir()):
                    self.run_dir.rmdir()
                raise
            self._emit(
                "start",
                epoch=self.epoch,
                steps=self.steps_per_epoch,
                info={"run_dir": str(self.run_dir), "device": str(self.device)},
            )
            try:
                self._check_stop()
                if self.peak_lr is None:
                    self._find_lr()
                while self.epoch <= self.cfg.epochs and self.status == "running":
                    self._run_epoch()
                    self.epoch += 1
                    self.step = 0
                    self._check_stop()
            except _Stop:
                self.status = "interrupted"
                self.save_checkpoint()
                self._write_record(time.perf_counter() - t0)
                name = signal.Signals(self._signum).name if self._signum else "signal"
                raise Interrupted(
                    f"{name} received: stopped at epoch {self.epoch} step {self.step} and saved "
                    f"a checkpoint; continue with `tlx train --resume {self.run_dir}`",
                    signum=int(self._signum or signal.SIGINT),
                ) from None
            except GateFailed:
                # Diverged: model.safetensors and checkpoint/ still hold the last good state.
                self.status = "diverged"
                self._write_record(time.perf_counter() - t0)
                raise
            finally:
                self._free_cache()
        if self.status == "running":
            self.status = "completed"
        record = self._write_record(time.perf_counter() - t0)
        self._emit("done", info={"run_dir": str(self.run_dir)})
        return record

    def _use_cache(self) -> bool:
        mode = self.cfg.cache_features
        if mode == "off" or self.unfrozen:
            return False
        return mode == "on" or not self.augment

    def _free_cache(self) -> None:
        getattr(self, "_loaders", {}).clear()  # persistent workers end with their loader
        for c in (self.train_cache, self.val_cache):
            if c is not None:
                c.close()
        self.train_cache = self.val_cache = None

    def _build_caches(self) -> None:

        t = time.perf_counter()

        def progress(done: int, total: int) -> None:
            self._emit("cache", step=done, steps=total)

        self.train_cache, self.val_cache = (
            self._run_trunk(ds, on_batch=progress) for ds in (self.bundle.train, self.bundle.val)
        )
        self.cache_info.update(
            used=True,
            build_seconds=round(time.perf_counter() - t, 3),
            bytes=self.train_cache.nbytes + self.val_cache.nbytes,
            storage=self.train_cache.storage,
            feature_shape=list(self.train_cache.features.shape[1:]),
        )

    def _find_lr(self) -> None:
        """``--lr auto``: the LR range test on the new head layer picks the peak LR."""
        from exporter.train.lr_finder import MAX_IMAGES, find_lr, plot_lr_find

        if self._use_cache() and self.train_cache is None:
            self._build_caches()  # training uses it next: not part of the finder's cost
        t = time.perf_counter()
        if self._use_cache():
            total = len(self.train_cache.labels)
            rng = np.random.default_rng(self.cfg.seed)
            pick = np.sort(rng.permutation(total)[: min(MAX_IMAGES, total)])
            feats, labels = self.train_cache.batch(pick)
        else:
            feats, labels = self._trunk_features(MAX_IMAGES)
        cfg = self.cfg
        self._emit("lr_find", epoch=self.epoch)
        with self._autocast():
            result = find_lr(
                self.model.classifier,
                feats.to(self.device),
                labels.to(self.device),
                avgpool=self.model.avgpool,
                optimizer=cfg.optimizer,
                weight_decay=cfg.weight_decay,
                momentum=cfg.momentum,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
            )
        self.peak_lr = result.chosen_lr
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"] = result.chosen_lr
        result.seconds = round(time.perf_counter() - t, 3)  # with the finder's own features
        self.lr_finder = result.to_dict()
        plot_lr_find(result, self.run_dir / LR_FIND_PNG)

    def _trunk_features(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk outputs of up to ``limit`` training images (eval transform), when uncached."""
        from exporter.data.datasets import limit_split

        subset = limit_split(self.bundle.train, limit, seed=self.cfg.seed, split="train")
        cache = self._run_trunk(subset)
        try:
            return cache.batch(np.arange(len(cache.labels)))
        finally:
            cache.close()

    def _run_trunk(self, ds: Any, on_batch: Any = None) -> Any:
        """The frozen trunk over ``ds`` on un-augmented images (a :class:`FeatureCache`)."""
        from exporter.train.feature_cache import build_feature_cache

        saved_tf = ds.transform
        ds.transform = self.bundle.preprocessing.eval_transform()
        try:
            return build_feature_cache(
                self.model.features,
                ds,
                batch_size=self.cfg.batch_size,
                device=self.device,
                workers=self.workers,
                channels_last=self.channels_last,
                autocast=self._autocast,
                on_batch=lambda done, total: (
                    on_batch(done, total) if on_batch else None,
                    self._check_stop(),
                ),
            )
        finally:
            ds.transform = saved_tf

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def _batches(self, epoch: int, cached: bool) -> Iterator[tuple[Any, Any]]:
        """This epoch's batches from ``self.step`` on; the shuffle depends only on (seed, epoch)."""
        import torch
        from torch.utils.data import DataLoader

        n = len(self.bundle.train)
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen).numpy()
        bs = self.cfg.batch_size
        index_batches = [perm[i : i + bs] for i in range(0, n, bs)][self.step :]
        if cached:
            for idx in index_batches:
                yield self.train_cache.batch(idx)
            return
        self._epoch_batches.set(index_batches)
        if "train" not in self._loaders:  # one loader: its workers live across epochs
            self._loaders["train"] = DataLoader(
                self.bundle.train,
                batch_sampler=self._epoch_batches,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
            )
        yield from self._loaders["train"]

    def _run_epoch(self) -> None:
        import torch

        cfg, epoch = self.cfg, self.epoch
        if self.unfreeze_at is not None and epoch >= self.unfreeze_at and not self.unfrozen:
            self.unfreeze()
        phase = 2 if self.unfrozen else 1
        t_epoch = time.perf_counter()
        cached = self._use_cache()
        if cached and self.train_cache is None:
            self._build_caches()
        if cached:
            self.cache_info["epochs"] = sorted({*self.cache_info["epochs"], epoch})
        trunk_frozen = not self.unfrozen
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.model.train()
        t_steps = time.perf_counter()
        for x, y in self._batches(epoch, cached):
            factor = phase_lr_factor(self.global_step, self.phases)
            for g in self.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * factor
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last and not cached:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                if cached:
                    logits = self._head(x)
                elif trunk_frozen:
                    with torch.no_grad():  # nothing to learn there: skip its autograd graph
                        f = self.trunk(x)
                    logits = self._head(f)
                else:
                    logits = self._head(self.trunk(x))
                loss = self.criterion(logits.float(), y)
            loss_v = float(loss.item())
            _check_finite(loss_v, epoch, self.step + 1, self.optimizer, self.run_dir)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            self.step += 1
            bs = len(y)
            self.sums["loss"] += loss_v * bs
            self.sums["correct"] += int((logits.argmax(1) == y).sum())
            self.sums["seen"] += bs
            elapsed = self.sums["seconds"] + time.perf_counter() - t_steps
            self._emit(
                "step",
                epoch=epoch,
                step=self.step,
                steps=self.steps_per_epoch,
                loss=self.sums["loss"] / self.sums["seen"],
                accuracy=self.sums["correct"] / self.sums["seen"],
                images_per_s=self.sums["seen"] / max(elapsed, 1e-9),
            )
            if self._signum is not None:
                self.sums["seconds"] = elapsed
                raise _Stop
        train_seconds = self.sums["seconds"] + time.perf_counter() - t_steps
        val = self._evaluate(cached)
        seen = max(1, self.sums["seen"])
        metrics = {
            "epoch": epoch,
            "phase": phase,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": _finite(self.sums["loss"] / seen),
            "train_accuracy": self.sums["correct"] / seen,
            "val_loss": _finite(val["loss"]),
            "val_accuracy": val["accuracy"],
            "images_per_s": round(self.sums["seen"] / max(train_seconds, 1e-9), 2),
            "seconds": round(time.perf_counter() - t_epoch + self.sums["seconds"], 3),
            "feature_cache": cached,
        }
        self.history.append(metrics)
        self.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
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

    def _evaluate(self, cached: bool) -> dict[str, Any]:
        import torch
        from torch.utils.data import DataLoader

        self.model.eval()
        loss_sum, preds, targets = 0.0, [], []
        if cached:
            n = len(self.val_cache.labels)
            bs = self.cfg.batch_size
            batches = (self.val_cache.batch(np.arange(i, min(n, i + bs))) for i in range(0, n, bs))
        else:
            batches = self._loaders.setdefault(
                "val",
                DataLoader(
                    self.bundle.val,
                    batch_size=self.cfg.batch_size,
                    num_workers=self.workers,
                    pin_memory=self.device.type == "cuda",
                    persistent_workers=self.workers > 0,
                    generator=torch.Generator().manual_seed(0),
                ),
            )
        with torch.no_grad():
            for x, y in batches:
                x, y = x.to(self.device), y.to(self.device)
                if self.channels_last and not cached:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    logits = self._head(x) if cached else self.model(x)
                logits = logits.float()
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                preds.append(logits.argmax(1).cpu().numpy())
                targets.append(y.cpu().numpy())
        self.model.train()
        pred, target = np.concatenate(preds), np.concatenate(targets)
        k = self.bundle.num_classes
        cm = confusion(pred, target, k)
        support = cm.sum(1)
        per_class = {
            name: (float(cm[i, i] / support[i]) if support[i] else None)
            for i, name in enumerate(self.bundle.class_names)
        }
        return {
            "loss": loss_sum / len(target),
            "accuracy": float((pred == target).mean()),
            "per_class_accuracy": per_class,
            "confusion_matrix": cm.tolist(),
        }

    # --- outputs ------------------------------------------------------------------------------

    def _save_weights(self) -> None:
        from safetensors.torch import save_file

        from exporter.core.fsio import write_with

        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        write_with(self.run_dir / WEIGHTS_NAME, lambda p: save_file(state, str(p)))

    def _config_dict(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d["model"] = {
            "arch": "vgg16",
            "weights": self.cfg.weights,
            "num_classes": self.bundle.num_classes,
        }
        return d

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
        write_json(self.run_dir / TRAIN_JSON, record)
        if self.history:
            plot_curves(self.history, self.run_dir / CURVES_PNG)
        return record


def _check_finite(loss: float, epoch: int, step: int, opt: Any, run_dir: Path) -> None:
    check_finite(loss, epoch=epoch, step=step, lr=opt.param_groups[0]["lr"], run_dir=run_dir)


__all__ = ["Trainer"]

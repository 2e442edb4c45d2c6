"""The training loop behind :func:`exporter.train.fit`: setup, phases, checkpoints, signals.

One :class:`Trainer` per process. The epoch (``epoch.py``), evaluation (``evaluate.py``),
the frozen trunk's cache and the LR finder (``trunk.py``) and the files (``outputs.py``) are
mixins over the same state. Under torchrun every rank runs the same Trainer on its share of
each global batch (``distributed.py``); rank 0 alone writes the run folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import LR_AUTO, TrainConfig
from exporter.core.errors import GateFailed, Interrupted, UsageError
from exporter.core.machine import usable_cpus
from exporter.core.runfolder import (
    CHECKPOINT_DIR,
    CURVES_PNG,
    LR_FIND_PNG,
    TRAIN_JSON,
    WEIGHTS_NAME,
)
from exporter.data.augment import resolve_augment
from exporter.model.shape import parse_unfreeze_from
from exporter.train.common import TrainEvent, default_run_dir, resolve_device
from exporter.train.device_setup import EpochBatches, amp_dtype, determinism
from exporter.train.distributed import DistContext, restart_count
from exporter.train.epoch import EpochMixin
from exporter.train.evaluate import EvalMixin
from exporter.train.outputs import RecordMixin
from exporter.train.recipe import plan_phases, unfreeze_epoch
from exporter.train.stop import StopMixin, _Stop
from exporter.train.trunk import TrunkMixin

if TYPE_CHECKING:
    import torch

    from exporter.train.common import ProgressFn


@contextlib.contextmanager
def local_main_first(dist: DistContext) -> Iterator[None]:
    """Let each node's first rank go first (downloads, decoding checks), the others after it."""
    if dist.enabled and dist.local_rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if dist.enabled and dist.local_rank == 0:
            dist.barrier()


class Trainer(StopMixin, TrunkMixin, EpochMixin, EvalMixin, RecordMixin):
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
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg.data.source)
        if self.dist.enabled and not cfg.out:
            # Each rank would stamp its own time: the folder must be named up front.
            raise UsageError("training on several processes needs --out RUN (one shared name)")
        taken = (run_dir / TRAIN_JSON).exists() or (run_dir / CHECKPOINT_DIR).exists()
        # A torchrun restart before the first checkpoint starts the same run over.
        if taken and not resume and restart_count() == 0:
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
        self.sums = self._zero_sums()
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
        from exporter.train.modules import HeadPath, install_sample_dropout

        cfg = self.cfg
        # The same seed on every rank: the frozen trunk is not in DDP, so its random init
        # (--weights none) must come out the same everywhere.
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        weights = "none" if self.resume else cfg.weights  # resume loads its own weights
        with local_main_first(self.dist):
            self.bundle = build_datasets(cfg.data)
            self.model = build_vgg16(num_classes=self.bundle.num_classes, weights=weights)
        install_sample_dropout(self.model)
        if self.dist.rank:  # augmentation draws differ per rank; rank 0 keeps the 1-process stream
            torch.manual_seed(cfg.seed + 1_000_003 * self.dist.rank)
        self.channels_last = self.device.type == "cuda" and cfg.channels_last
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.head_path = HeadPath(self.model)
        self.amp_dtype = amp_dtype(self.device.type, cfg.amp, device_index=self.device.index)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self._setup_optimizer()
        self.workers = (
            cfg.workers
            if cfg.workers is not None
            else (min(8, usable_cpus()) if self.device.type == "cuda" else 0)
        )
        # Steps count global batches: the same for any number of processes.
        self.steps_per_epoch = math.ceil(len(self.bundle.train) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.phases = plan_phases(cfg, self.steps_per_epoch)
        self.train_cache = self.val_cache = None
        self._loaders: dict[str, Any] = {}  # built once: persistent workers live across epochs
        self._epoch_batches = EpochBatches()
        if self.resume:
            self._load_checkpoint()
        self._wrap()

    def _setup_optimizer(self) -> None:
        import torch

        cfg = self.cfg
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

    def _wrap(self) -> None:
        """Wrap what trains now in DDP: the head path (trunk frozen) or the whole model.

        Called after freezing and again after phase 2 unfreezes part of the trunk, so the
        reducer always holds exactly the parameters that get gradients.
        """
        import torch

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

    def unfreeze(self) -> list[str]:
        """Phase 2: make the top of the trunk trainable in a new param group (lr × mult)."""
        from exporter.model.vgg import unfreeze_from

        flipped = unfreeze_from(self.model, parse_unfreeze_from(self.cfg.unfreeze_from))
        named = dict(self.model.named_parameters())
        assert self.peak_lr is not None  # set by the config or the range test before epoch 1
        base = self.peak_lr * self.cfg.backbone_lr_mult
        self.optimizer.add_param_group(
            {"params": [named[n] for n in flipped], "lr": base, "initial_lr": base}
        )
        self.unfrozen = flipped
        self._free_cache()  # the trunk now changes: cached outputs are stale
        if getattr(self, "head_fn", None) is not None:
            self._wrap()  # a live DDP must not see requires_grad change: wrap anew
        return flipped

    # --- checkpoint ---------------------------------------------------------------------------

    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
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
            "rng": rng[0],
            # Every rank's RNG (augmentation); restored only by a run of the same world size.
            "rng_ranks": rng,
            "epoch": self.epoch,
            "step": self.step,
            "loop": {
                "sums": {k: v for k, v in self.sums.items() if not k.startswith("local_")},
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
        """Every rank hands in its RNG state; rank 0 writes ``checkpoint/`` atomically."""
        from exporter.train.checkpoint import capture_rng, save_checkpoint

        rng = self.dist.gather_object(capture_rng())
        if not self.dist.is_main:
            return
        meta = {"epoch": self.epoch, "step": self.step, "steps_per_epoch": self.steps_per_epoch}
        meta["next"] = f"epoch {self.epoch} step {self.step}"
        meta["world_size"] = self.dist.world_size
        save_checkpoint(self.run_dir, self._state(rng), meta)

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
        self.sums = {**self._zero_sums(), **loop["sums"]}
        self.history, self.best = list(loop["history"]), dict(loop["best"])
        self.best_extra, self.bad_epochs = dict(loop["best_extra"]), int(loop["bad_epochs"])
        self.cache_info = dict(loop["cache_info"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            restore_rng(ranks[self.dist.rank])
        elif self.dist.is_main:
            restore_rng(state["rng"])  # another world size: the other ranks keep their seeds

    def _emit(self, kind: str, **kw: Any) -> None:
        if self.progress is not None and self.dist.is_main:
            self.progress(TrainEvent(kind, epochs=self.cfg.epochs, **kw))

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from exporter.core.fsio import clean_stale_temps
        from exporter.core.safepath import guard

        created = not self.run_dir.exists()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(self.run_dir)
            clean_stale_temps(self.run_dir / CHECKPOINT_DIR)
            for name in (WEIGHTS_NAME, TRAIN_JSON, CURVES_PNG, LR_FIND_PNG):
                guard(self.run_dir / name)  # refused now, not after the training
        _cap_torch_threads()
        t0 = time.perf_counter()
        with self._signals(), determinism(self.cfg.deterministic, self.device.type):
            try:
                self._setup()
            except BaseException:
                # Bad data, weights or device: leave no empty run folder behind.
                if self.dist.is_main and created and not any(self.run_dir.iterdir()):
                    self.run_dir.rmdir()
                raise
            self._emit(
                "start",
                epoch=self.epoch,
                steps=self.steps_per_epoch,
                info={
                    "run_dir": str(self.run_dir),
                    "device": str(self.device),
                    "world_size": self.dist.world_size,
                },
            )
            try:
                self._train_all()
            except _Stop:
                self._interrupted(time.perf_counter() - t0)
            except GateFailed:
                # Diverged: model.safetensors and checkpoint/ still hold the last good state.
                self.status = "diverged"
                self._write_record(time.perf_counter() - t0)
                self.dist.barrier()
                raise
            finally:
                self._free_cache()
        if self.status == "running":
            self.status = "completed"
        record = self._write_record(time.perf_counter() - t0)
        self.dist.barrier()  # the others leave only once rank 0 has written everything
        self._emit("done", info={"run_dir": str(self.run_dir)})
        return record

    def _train_all(self) -> None:
        self._sync_stop()
        if self.peak_lr is None:
            self._find_lr()
            self._sync_stop()
        while self.epoch <= self.cfg.epochs and self.status == "running":
            self._run_epoch()
            self.epoch += 1
            self.step = 0
            self._sync_stop()

    def _interrupted(self, seconds: float) -> None:
        """Every rank stops at the same step; rank 0 saves, the others wait for it."""
        self.status = "interrupted"
        self.save_checkpoint()
        self._write_record(seconds)
        self.dist.barrier()
        name = signal.Signals(self._signum).name if self._signum else "signal"
        raise Interrupted(
            f"{name} received: stopped at epoch {self.epoch} step {self.step} and saved "
            f"a checkpoint; continue with `tlx train --resume {self.run_dir}`",
            signum=int(self._signum or signal.SIGINT),
        ) from None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _head(self, f: torch.Tensor) -> torch.Tensor:
        """The head path on trunk outputs, through DDP while it is the part that trains."""
        return self.head_fn(f)


__all__ = ["Trainer"]


def _cap_torch_threads() -> None:
    """At most one torch thread per usable core (a container's quota included).

    torch counts the node's cores (kserve/kserve #1031); OMP_NUM_THREADS, when set (torchrun's
    workers, Ray), is the user's word and kept. Lowering only: a process given fewer threads
    on purpose keeps them.
    """
    import torch

    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > usable_cpus():
        torch.set_num_threads(usable_cpus())

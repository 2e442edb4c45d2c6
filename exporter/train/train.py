"""``fit()``: the transfer-learning loop (seed recipe plus staged fine-tuning).

Phase 1 is the seed: ``features`` frozen, the classifier trained. Optional phase 2
(``unfreeze_at``) makes the top of the trunk trainable in a new optimizer param group with
``lr × backbone_lr_mult``. Warmup + cosine LR per step, label smoothing, gradient
clipping, AMP on CUDA, early stopping, a feature cache while the trunk is frozen, a
resumable checkpoint on SIGINT/SIGTERM and every ``save_every`` epochs.

Determinism: the epoch's shuffle is a pure function of (seed, epoch), the DataLoader has
its own generator, and dropout masks are a pure function of (seed, epoch, image index); the
only consumer of the global torch RNG is augmentation (in the main process). So the feature
cache, a resume, an uninterrupted run, and a run split over several processes all train on
the same batches with the same masks.

Several processes: run under torchrun (``tlx train --nproc N`` starts it); :func:`fit` joins
the process group from torchrun's environment, and leaves it when done.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from exporter.core.config import LaunchSpec, TrainConfig
from exporter.core.errors import EnvironmentUnavailable, InputFileError, TlxError, UsageError
from exporter.core.resources import require
from exporter.core.runfolder import (
    CHECKPOINT_DIR,
    CURVES_PNG,
    LR_FIND_PNG,
    TRAIN_JSON,
    WEIGHTS_NAME,
)
from exporter.core.runlock import run_lock
from exporter.model.footprint import train_need
from exporter.train.checkpoint import STATE_NAME, checkpoint_dir, load_checkpoint
from exporter.train.common import ProgressFn, default_run_dir, resolve_device
from exporter.train.device_setup import reuse_freed_memory
from exporter.train.distributed import DistContext, init_distributed, restart_count
from exporter.train.loop import Trainer

__all__ = ["TrainResult", "fit", "launch_training", "resume_config", "run_to_continue"]


@dataclass(frozen=True)
class TrainResult:
    """The finished run: where it is and what train.json says."""

    run_dir: Path
    record: dict[str, Any]

    @property
    def best_val_accuracy(self) -> float:
        return float(self.record["best"]["val_accuracy"])

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return list(self.record["epochs"])


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with, read from its checkpoint (``out`` = ``run_dir``)."""
    state = load_checkpoint(Path(run_dir))
    try:
        cfg = TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError, UsageError) as exc:  # name the file, not an option
        where = Path(run_dir) / CHECKPOINT_DIR
        raise InputFileError(f"{where}: the checkpoint's training config is bad: {exc}") from exc
    return replace(cfg, out=str(run_dir))


def run_to_continue(resume: str | Path | None, out: str | Path | None) -> str | Path | None:
    """``--resume RUN``; else, when torchrun restarted the workers after a failure
    (--max-restarts), the same command line came back: ``--out`` if it has a checkpoint."""
    if resume is None and restart_count() > 0 and out is not None:
        return out if (checkpoint_dir(Path(out)) / STATE_NAME).is_file() else None
    return resume


def fit(
    cfg: TrainConfig, *, progress: ProgressFn | None = None, resume: bool = False
) -> TrainResult:
    """Train VGG16 on ``cfg.data`` and write the run folder (see ARCHITECTURE.md).

    Args:
        cfg: the settings; ``cfg.out`` is the run folder (default
            ``artifacts/<dataset>-<UTC time>``).
        progress: called with :class:`TrainEvent`s; the library never prints.
        resume: continue the run in ``cfg.out`` from its ``checkpoint/`` (use
            :func:`resume_config` to get the original settings).

    Raises:
        UsageError / InputFileError: bad settings or data.
        EnvironmentUnavailable: CUDA asked for but absent, dataset or weights not available.
        GateFailed: the loss became NaN/Inf (the last good checkpoint is kept).
        Interrupted: SIGINT/SIGTERM; a resumable checkpoint was saved first.
        RunBusy: another command holds the run folder's lock under ``lock_policy(wait=False)``.
    """
    dist = init_distributed(cfg.device, cfg.batch_size)
    try:
        with reuse_freed_memory():  # ~30% of a CPU step was page faults on re-mmapped buffers
            trainer = Trainer(cfg, progress=progress, resume=resume, dist=dist)
            # Each process holds its share of the global batch.
            _check_resources(trainer.cfg, trainer.device.type, dist.world_size)
            # Rank 0 alone writes the run folder, so it alone takes the run's lock (the others
            # waiting on it would never reach the collectives rank 0 waits for).
            lock = (
                run_lock(trainer.run_dir, "train", create=True)
                if dist.is_main
                else contextlib.nullcontext()
            )
            with lock:
                _claim_run_dir(trainer.run_dir, dist=dist, resume=resume)
                return TrainResult(trainer.run_dir, trainer.run())
    except Exception as exc:
        mapped = _lost_peer(exc, dist)
        if mapped is exc:
            raise
        raise mapped from exc
    finally:
        dist.close()


def _claim_run_dir(run: Path, *, dist: DistContext, resume: bool) -> None:
    """Refuse a folder that holds a run unless resuming, then make it (rank 0).

    Under the run's lock, so of two trains into one new ``--out`` the second is refused;
    rank 0 holds the lock, so it decides and tells the others.
    """
    from exporter.core.fsio import clean_stale_temps
    from exporter.core.safepath import guard

    taken = None
    if dist.is_main:
        taken = (run / TRAIN_JSON).exists() or (run / CHECKPOINT_DIR).exists()
    # A torchrun restart before the first checkpoint starts the same run over.
    if dist.broadcast_object(taken) and not resume and restart_count() == 0:
        raise UsageError(
            f"--out {run} already holds a run; choose another --out, or continue "
            f"it with --resume {run}"
        )
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(run)
        clean_stale_temps(run / CHECKPOINT_DIR)
        for name in (WEIGHTS_NAME, TRAIN_JSON, CURVES_PNG, LR_FIND_PNG):
            guard(run / name)  # refused now, not after the training


def _lost_peer(exc: Exception, dist: DistContext) -> Exception:
    """A collective that failed because another rank died is an environment failure (exit 3)."""
    if isinstance(exc, TlxError) or not dist.enabled:
        return exc
    import torch.distributed as tdist

    text = str(exc).lower()
    lost = any(w in text for w in ("gloo", "nccl", "connection", "peer", "timed out", "timeout"))
    if isinstance(exc, tdist.DistError) or (isinstance(exc, RuntimeError) and lost):
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        return EnvironmentUnavailable(
            f"rank {dist.rank}: lost the other training processes ({first}); the last "
            "checkpoint in the run folder is intact: continue with tlx train --resume RUN"
        )
    return exc


def launch_training(
    cfg: TrainConfig, spec: LaunchSpec, worker_args: list[str], *, resume: bool
) -> None:
    """``tlx train --nproc/--nnodes``: check, then start the workers through torchrun
    (``worker_args``: this command line without the launcher's options)."""
    from exporter.train.launch import launch

    if "TORCHELASTIC_RUN_ID" in os.environ:
        raise UsageError("--nproc/--nnodes launch torchrun; under torchrun already, drop them")
    world = spec.nproc * spec.nnodes
    if not resume and cfg.batch_size % world:
        raise UsageError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide by the number "
            f"of processes ({world} = --nproc {spec.nproc} x --nnodes {spec.nnodes})"
        )
    # The CPU workers of this machine share its memory: checked together (N x one worker's
    # need), before any starts. Each checks again for itself; on CUDA each has its own GPU.
    if (device := resolve_device(cfg.device).type) == "cpu":
        _check_resources(cfg, device, world, local_workers=spec.nproc)
    if cfg.out is None and not resume:
        # Every worker must write to one folder: name it here, not once per process.
        worker_args = [*worker_args, "--out", str(default_run_dir(cfg.data.source))]
    launch(spec, worker_args)


def _check_resources(
    cfg: TrainConfig, device: str, world_size: int = 1, *, local_workers: int = 1
) -> None:
    """Exit 2 for a missing or mis-shaped image folder, 3 when memory or disk is short (the
    folder first: a missing --data-dir is the message, not the memory)."""
    from exporter.data.datasets import check_data_dir
    from exporter.model.shape import parse_unfreeze_from
    from exporter.train.recipe import unfreeze_epoch

    check_data_dir(cfg.data)
    first = parse_unfreeze_from(cfg.unfreeze_from) if unfreeze_epoch(cfg) is not None else None
    out = Path(cfg.out) if cfg.out else Path.cwd()
    # Ten classes for the estimate: the head grows by 16 kB per class, noise beside 0.5 GB.
    need = train_need(
        size=cfg.data.image_size,
        batch=max(1, cfg.batch_size // world_size),
        num_classes=10,
        first_trainable=first,
        optimizer=cfg.optimizer,
        device=device,
        folder=out,
        workers=local_workers,
    )
    require(need)

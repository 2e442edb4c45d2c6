"""Knowledge distillation: a pruned student learns to answer like the run's trained model.

Soft targets plus the labels (Hinton et al. 2015): the loss is
``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1-α)·CE(s, y)``. The teacher's logits are computed
once per training image (no augmentation, so they never change) and kept in the checkpoint.
The student is the pruned copy of the teacher, so it starts close and a few epochs of AdamW
with a cosine schedule recover it; every layer trains (the pruned trunk has to adapt too).

Resumable like training: SIGINT/SIGTERM set a flag checked between steps; the loop then saves
``RUN/distill/<tag>/state.pt`` (student, optimizer, epoch, step, the epoch's order, teacher
logits, RNG) and raises :class:`~exporter.core.errors.Interrupted`; ``--resume`` continues at
that step. A checkpoint whose settings or teacher differ from the command's is refused.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.errors import InputFileError, Interrupted, UsageError
from exporter.core.fsio import write_json
from exporter.model.shape import VGGShape
from exporter.train.checkpoint import META_NAME, STATE_NAME, read_state, write_tensors

if TYPE_CHECKING:
    import torch
    from torch import nn

TEMPERATURE = 4.0  # softens the teacher's distribution: the "dark knowledge" between classes
ALPHA = 0.7  # weight of the soft targets against the labels
FORMAT = "tlx-distill-1"
DISTILL_DIR = "distill"

StepCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DistillSettings:
    """What a distillation run is; a checkpoint resumes only with the same settings."""

    epochs: int
    lr: float
    batch: int
    seed: int
    ratio: float
    teacher_sha256: str
    images: int
    image_size: int
    temperature: float = TEMPERATURE
    alpha: float = ALPHA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DistillResult:
    """What the distillation did, for the report."""

    settings: DistillSettings
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: dict[str, int] | None = None
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "history": self.history,
            "seconds": round(self.seconds, 1),
            "resumed_from": self.resumed_from,
            "device": self.device,
        }


def checkpoint_folder(run_dir: Path, ratio: float) -> Path:
    """Where the distillation at ``ratio`` keeps its checkpoint: ``RUN/distill/r0.50``."""
    return Path(run_dir) / DISTILL_DIR / f"r{ratio:.2f}"


@contextlib.contextmanager
def _stop_flag() -> Iterator[list[int]]:
    """SIGINT/SIGTERM only record the signal (checked between steps); a second one aborts."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: Any) -> None:
        if got:
            raise KeyboardInterrupt
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def distill(
    student: nn.Module | None,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    soft_targets: np.ndarray,
    settings: DistillSettings,
    folder: Path,
    resume: bool,
    device: str = "cpu",
    resume_hint: str = "",
    progress: StepCallback | None = None,
) -> tuple[nn.Module, DistillResult]:
    """Train ``student`` to match ``soft_targets`` (the teacher's logits) and ``labels`` on
    ``images`` (float32 NCHW through the run's eval transform); return it (eval mode, on the
    CPU) and what happened.

    With ``resume`` the student (then None) and everything else come from the checkpoint in
    ``folder`` (:func:`checkpoint_folder`); ``resume_hint`` is the command that resumes, for
    the message after a signal; ``progress`` gets ``(description, completed, total)`` steps.

    Raises:
        Interrupted: a signal stopped it after the checkpoint was saved (exit 130 / 143).
        InputFileError: ``resume`` without a usable checkpoint, or one made with other settings.
    """
    run = _Run(settings, len(images), folder, device)
    if resume:
        student = run.restore()
    elif student is None:
        raise UsageError("distill: a student model is needed unless resuming")
    else:
        run.start(student)
    run.train(images, labels, soft_targets, resume_hint=resume_hint, progress=progress)
    return run.student.cpu().eval(), run.result


class _Run:
    """One distillation's state: the student, its optimizer and schedule, and where it is."""

    def __init__(self, settings: DistillSettings, n: int, folder: Path, device: str) -> None:
        import torch

        self.settings, self.n, self.folder, self.device = settings, n, folder, device
        self.steps_per_epoch = math.ceil(n / settings.batch)
        self.total = self.steps_per_epoch * settings.epochs
        self.result = DistillResult(settings, device=str(device))
        self.epoch = self.step = 0
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.order = torch.randperm(n, generator=self.gen)

    def start(self, student: nn.Module) -> None:
        import torch

        torch.manual_seed(self.settings.seed)  # dropout masks: the same run twice is the same
        self._attach(student)

    def restore(self) -> nn.Module:
        """Rebuild the student and everything else from the checkpoint in ``folder``."""
        import torch

        state = load_state(self.folder, self.settings)
        student = VGGShape.from_dict(state["shape"], source=str(self.folder / STATE_NAME)).build()
        student.load_state_dict(state["student"])
        self._attach(student)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.order = state["order"]
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout: resumed = never stopped
        self.result.history = list(state["history"])
        self.result.resumed_from = {"epoch": self.epoch, "step": self.step}
        return student

    def _attach(self, student: nn.Module) -> None:
        import torch

        self.student = student.to(self.device).train()
        for p in self.student.parameters():
            p.requires_grad_(True)  # every layer adapts, the pruned trunk included
        self.opt = torch.optim.AdamW(
            self.student.parameters(), lr=self.settings.lr, weight_decay=1e-4
        )
        total = self.total
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )

    def save(self) -> None:
        import torch

        state = {
            "shape": VGGShape.of(self.student).to_dict(),
            "student": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "order": self.order,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.result.history,
        }
        save_state(self.folder, state, self.settings)

    def train(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        soft_targets: np.ndarray,
        *,
        resume_hint: str,
        progress: StepCallback | None,
    ) -> None:
        import torch

        x_all = torch.from_numpy(images)
        y_all = torch.from_numpy(labels.astype(np.int64))
        t_all = torch.from_numpy(soft_targets.astype(np.float32))
        cfg, t0 = self.settings, time.perf_counter()
        loss_sum, seen = 0.0, 0
        with _stop_flag() as stopped:
            while self.epoch < cfg.epochs:
                while self.step < self.steps_per_epoch:
                    if stopped:
                        self.save()
                        raise Interrupted(
                            f"distillation stopped by signal {stopped[0]} at epoch "
                            f"{self.epoch + 1} step {self.step}; checkpoint saved in "
                            f"{self.folder}. Resume with: {resume_hint}",
                            signum=stopped[0],
                        )
                    idx = self.order[self.step * cfg.batch : (self.step + 1) * cfg.batch]
                    loss = _step(self.student, self.opt, x_all[idx], y_all[idx], t_all[idx],
                                 cfg, self.device)  # fmt: skip
                    self.sched.step()
                    loss_sum, seen = loss_sum + loss * len(idx), seen + len(idx)
                    self.step += 1
                    if progress:
                        done = self.epoch * self.steps_per_epoch + self.step
                        progress(
                            f"distilling r={cfg.ratio:.2f}: epoch {self.epoch + 1}/{cfg.epochs}"
                            f" loss {loss:.3f}",
                            done,
                            self.total,
                        )
                self.result.history.append({"epoch": self.epoch + 1, "loss": loss_sum / seen})
                loss_sum, seen = 0.0, 0
                self.epoch, self.step = self.epoch + 1, 0
                self.order = torch.randperm(self.n, generator=self.gen)
                if self.epoch < cfg.epochs:
                    self.save()  # a kill between epochs loses at most one epoch
        self.result.seconds += time.perf_counter() - t0


def _step(
    student: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    settings: DistillSettings,
    device: str,
) -> float:
    import torch.nn.functional as F

    x, y, t = x.to(device), y.to(device), t.to(device)
    s = student(x)
    temp = settings.temperature
    soft = F.kl_div(
        F.log_softmax(s / temp, dim=1),
        F.log_softmax(t / temp, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    loss = settings.alpha * temp * temp * soft + (1 - settings.alpha) * F.cross_entropy(s, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def save_state(folder: Path, state: dict[str, Any], settings: DistillSettings) -> None:
    """Atomically write the checkpoint, then a readable ``meta.json`` beside it."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "settings": settings.to_dict(), **state}
    write_tensors(folder / STATE_NAME, payload, torch.save)  # the space checked first
    write_json(
        folder / META_NAME,
        {"settings": settings.to_dict(), "epoch": state["epoch"], "step": state["step"]},
    )


def load_state(folder: Path, settings: DistillSettings) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``) made with the same settings.

    Raises:
        InputFileError: missing, unreadable, or made with other settings or another teacher.
    """
    path = folder / STATE_NAME
    if not path.is_file():
        raise InputFileError(
            f"--resume: no distillation checkpoint at {path} (it is written when a "
            "distillation is stopped by a signal or finishes an epoch)"
        )
    state = read_state(path, fmt=FORMAT, what="tlx distillation checkpoint")
    saved, now = state.get("settings") or {}, settings.to_dict()
    differ = sorted(k for k in now if saved.get(k) != now[k])
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} → {now[k]!r}" for k in differ)
        raise InputFileError(
            f"--resume: {path} was made with other settings ({shown}); rerun without --resume "
            "to start over"
        )
    return state

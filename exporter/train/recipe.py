"""The training recipe: choices that depend on the run's size, resolved once and recorded.

A default that depends on the data (augmentation by image size, the head/finetune split of
the epochs, warm-up length by number of steps) is resolved here from the config, so that
``fit``, ``train.json`` and ``--help`` say the same thing. The LR schedule is a pure
function of the global step and these phases, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from exporter.core.config import (
    DEFAULT_WARMUP_FRACTION,
    FINETUNE_HEAD_SHARE,
    LR_AUTO,
    TrainConfig,
)
from exporter.data.datasets import resolve_augment

__all__ = ["Phase", "Recipe", "lr_factor", "phase_lr_factor", "plan_phases", "unfreeze_epoch"]


def unfreeze_epoch(cfg: TrainConfig) -> int | None:
    """The 1-based epoch at which the top of the trunk is unfrozen (None: never).

    ``--unfreeze-at`` wins; otherwise ``--recipe finetune`` unfreezes after ``freeze_epochs``
    head epochs (default: :data:`FINETUNE_HEAD_SHARE` of the epochs, at least 1 each side).
    """
    if cfg.unfreeze_at is not None:
        return cfg.unfreeze_at
    if cfg.recipe != "finetune":
        return None
    head = cfg.freeze_epochs
    if head is None:
        head = min(cfg.epochs - 1, max(1, round(FINETUNE_HEAD_SHARE * cfg.epochs)))
    return head + 1


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one set of trainable parameters and its own LR cycle."""

    name: str  # "head" | "finetune"
    first_epoch: int
    last_epoch: int
    start_step: int
    steps: int
    warmup_steps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_phases(cfg: TrainConfig, steps_per_epoch: int) -> list[Phase]:
    """Phase 1 trains the head; phase 2 (if any) the head plus the top of the trunk.

    Each phase gets its own warm-up and cosine decay: a fresh warm-up when the trunk is
    unfrozen keeps the first large updates away from the pretrained conv weights (fastai's
    ``fine_tune`` runs one one-cycle schedule per stage for the same reason).
    """
    u = unfreeze_epoch(cfg)
    if u is None or u > cfg.epochs:
        bounds = [(1, cfg.epochs, "head")]
    elif u == 1:
        bounds = [(1, cfg.epochs, "finetune")]
    else:
        bounds = [(1, u - 1, "head"), (u, cfg.epochs, "finetune")]
    phases = []
    for first, last, name in bounds:
        steps = (last - first + 1) * steps_per_epoch
        if cfg.warmup_epochs is None:
            warmup = max(1, round(DEFAULT_WARMUP_FRACTION * steps))
        else:
            warmup = round(cfg.warmup_epochs * steps_per_epoch)
        phases.append(
            Phase(
                name=name,
                first_epoch=first,
                last_epoch=last,
                start_step=(first - 1) * steps_per_epoch,
                steps=steps,
                warmup_steps=min(warmup, steps),
            )
        )
    return phases


def phase_lr_factor(global_step: int, phases: list[Phase]) -> float:
    """LR multiplier at ``global_step``: linear warm-up to 1, then cosine decay within a phase."""
    phase = phases[0]
    for p in phases:
        if global_step >= p.start_step:
            phase = p
    return lr_factor(
        global_step - phase.start_step, total_steps=phase.steps, warmup_steps=phase.warmup_steps
    )


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Recipe:
    """The run's recipe, resolved once (train.json's ``recipe``); ``peak_lr`` is None until
    the ``--lr auto`` range test chose it (its result: ``lr_finder``)."""

    name: str
    unfreeze_at: int | None
    phases: list[Phase]
    peak_lr: float | None
    lr_source: str
    augment: bool
    augment_reason: str
    lr_finder: dict[str, Any] | None = None

    @classmethod
    def resolve(cls, cfg: TrainConfig, steps_per_epoch: int) -> Recipe:
        auto = cfg.lr == LR_AUTO
        augment, reason = resolve_augment(cfg.data)
        return cls(
            name=cfg.recipe,
            unfreeze_at=unfreeze_epoch(cfg),
            phases=plan_phases(cfg, steps_per_epoch),
            peak_lr=None if auto else float(cfg.lr),
            lr_source="lr_finder" if auto else "--lr",
            augment=augment,
            augment_reason=reason,
        )

    def scheduler_state(self, global_step: int) -> dict[str, Any]:
        """The checkpoint's ``scheduler``: the LR is a pure function of the global step."""
        return {
            "kind": "phased_warmup_cosine_per_step",
            "global_step": global_step,
            "total_steps": sum(p.steps for p in self.phases),
            "phases": [p.to_dict() for p in self.phases],
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["lr_finder"]  # a block of its own in train.json
        return d

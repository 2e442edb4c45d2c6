"""``--lr auto``: Leslie Smith's LR range test (arXiv:1506.01186, §3.3), as fastai's ``lr_find``.

The test trains a copy of the new output layer (``classifier[6]``) on the penultimate
features of the training images (the pretrained ``classifier[:6]`` applied once, in eval
mode), raising the LR exponentially every step from ``START_LR`` to ``END_LR``, and records
the smoothed loss. Why only the new layer: it is the part that starts from nothing, and on
fixed features one step costs microseconds, so a full sweep costs one forward pass of fc1/fc2
over at most :data:`MAX_IMAGES` images instead of ~100 steps through the 120M-parameter
head (a real sweep of the whole head took longer than a 3-epoch run at 32 px).

The LR is read off the curve with Smith's rule: one order of magnitude below the LR of the
lowest smoothed loss (fastai's ``minimum`` suggestion), between the stalled end (loss flat,
LR too small) and the diverging end. On the real transfer tasks of
benchmarks/transfer_bench.py it landed on the best LR of a grid for the whole head, where
fastai's newer ``valley`` rule (also recorded) chose 5-8× too low: on fixed features the
loss creeps down over a long flat stretch, which ``valley`` takes for the descent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from exporter.core.config import TrainConfig
    from exporter.train.batches import Batches
    from exporter.train.learner import Learner

__all__ = ["LRFinderResult", "choose_lr", "find_lr", "range_test", "valley"]


START_LR = 1e-7
END_LR = 10.0
STEPS = 100
MAX_IMAGES = 512  # penultimate features of this many training images feed the sweep
SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (fastai's beta)
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss exceeds 4× its minimum (fastai)
# Below this many training images the sweep's 100 steps fit the same few images over and over:
# the loss it records measures memorisation, not the LR's stability (10 images chose 0.042,
# and training at it blew the loss up to 34,076). The default LR is used instead, with a warning.
MIN_IMAGES = 50


@dataclass
class LRFinderResult:
    """The range test's curve and the LR it chose (``train.json["lr_finder"]``)."""

    lrs: list[float]
    losses: list[float]  # smoothed
    chosen_lr: float
    rule: str = "minimum/10"
    min_loss_lr: float = 0.0
    valley_lr: float = 0.0
    seconds: float = 0.0  # the whole test, trunk outputs included (set by range_test)
    images: int = 0
    stopped: str = "end"  # "end" (swept to END_LR) | "diverged" | "skipped" (too few images)
    warning: str | None = None  # why the rule fell back, for train.json and the log

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = [float(f"{v:.4g}") for v in self.lrs]
        d["losses"] = [round(v, 5) for v in self.losses]
        return d


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley``: two thirds down the longest run of decreasing loss."""
    n = len(losses)
    if n < 3:
        raise ValueError("the range test needs at least 3 points")
    # Longest decreasing subsequence ending at each point (O(n²); n ≤ a few hundred).
    run = [1] * n
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end] + 1
    third = (best_end - start) / 3
    idx = start + int(third) + int(third / 2)
    return float(lrs[min(idx, n - 1)])


def find_lr(
    head: nn.Sequential,
    trunk_features: torch.Tensor,
    labels: torch.Tensor,
    *,
    avgpool: nn.Module,
    optimizer: str,
    weight_decay: float,
    momentum: float,
    batch_size: int,
    seed: int,
) -> LRFinderResult:
    """Sweep the last layer of ``head`` (the model's ``classifier``, not changed) on
    ``trunk_features`` (the outputs of ``features``, before ``avgpool``) with the run's
    optimizer settings and batch size."""
    import copy

    import torch

    from exporter.core.config import TrainConfig
    from exporter.train.learner import make_optimizer

    if len(labels) < MIN_IMAGES:  # no sweep: the default LR, with a warning
        chosen, n = float(TrainConfig.lr), len(labels)  # type: ignore[arg-type]
        return LRFinderResult(
            lrs=[],
            losses=[],
            chosen_lr=chosen,
            rule="default (too few images)",
            images=n,
            stopped="skipped",
            warning=(
                f"only {n} training images (the range test needs at least {MIN_IMAGES}): the "
                f"sweep would measure memorisation, so the default LR {chosen:g} is used"
            ),
        )
    # classifier[:-1] applied once in eval mode (dropout off); the head's mode is kept.
    was_training = head.training
    head.eval()
    with torch.no_grad():
        penultimate = head[:-1](torch.flatten(avgpool(trunk_features.float()), 1))
    head.train(was_training)
    layer = copy.deepcopy(head[-1]).float().train()
    params = [{"params": list(layer.parameters())}]
    opt = make_optimizer(
        params, optimizer, lr=START_LR, momentum=momentum, weight_decay=weight_decay
    )
    batches = _batches(len(labels), batch_size=batch_size, seed=seed)
    lrs, losses, stopped = _sweep(layer, opt, batches, penultimate, labels)
    if len(losses) < 3:
        raise ValueError(f"the LR range test diverged after {len(losses)} steps")
    chosen, rule, warning = choose_lr(lrs, losses, stopped)
    return LRFinderResult(
        lrs=lrs,
        losses=losses,
        chosen_lr=chosen,
        rule=rule,
        min_loss_lr=float(lrs[losses.index(min(losses))]),
        valley_lr=valley(lrs, losses),
        images=len(labels),
        stopped=stopped,
        warning=warning,
    )


def range_test(learner: Learner, batches: Batches, cfg: TrainConfig) -> LRFinderResult:
    """The training run's range test: its head, optimizer settings and batch size, on the
    trunk's outputs of up to :data:`MAX_IMAGES` training images (timed with them)."""
    t = time.perf_counter()
    feats, labels = batches.trunk_sample(MAX_IMAGES, seed=cfg.seed)
    model, device = learner.model, learner.device
    with learner.autocast():
        result = find_lr(
            model.classifier,
            feats.to(device),
            labels.to(device),
            avgpool=model.avgpool,
            optimizer=cfg.optimizer,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
    result.seconds = round(time.perf_counter() - t, 3)
    return result


def _batches(n: int, *, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless seeded batches of image indices, reshuffled before each new pass."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, n)
    while True:  # full batches only; each pass over the images freshly shuffled
        order = torch.randperm(n, generator=gen)
        yield from (order[i : i + bs] for i in range(0, n - bs + 1, bs))


def _sweep(
    layer: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterator[torch.Tensor],
    penultimate: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[list[float], list[float], str]:
    """One optimizer step per LR, rising exponentially from ``START_LR`` to ``END_LR``; the
    LRs tried, their smoothed losses, and why it stopped."""
    import torch

    tried: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    ratio = (END_LR / START_LR) ** (1 / (STEPS - 1))
    # The schedule ends the sweep; the batches never end (and are drawn only while it runs).
    for i, idx in zip(range(STEPS), batches, strict=False):
        lr = START_LR * ratio**i
        for g in opt.param_groups:
            g["lr"] = lr
        loss = torch.nn.functional.cross_entropy(layer(penultimate[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            return tried, losses, "diverged"
        avg = SMOOTHING * avg + (1 - SMOOTHING) * value
        smoothed = avg / (1 - SMOOTHING ** (i + 1))
        tried.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if i > 10 and smoothed > DIVERGE_FACTOR * best:
            return tried, losses, "diverged"
    return tried, losses, "end"


def choose_lr(lrs: list[float], losses: list[float], stopped: str) -> tuple[float, str, str | None]:
    """The LR to train with, the rule that chose it, and a warning when the rule fell back.

    Smith's ``minimum/10`` assumes the sweep saw the loss turn up: the minimum then marks the
    edge of stability and one decade below it is safe. When the loss was still falling at the
    end of the sweep (an easy, separable problem), the minimum sits at ``end_lr`` only because
    the sweep stopped there, and a tenth of it (1.0) would wreck the pretrained head; the
    ``valley`` of the falling curve is then the better-founded choice.
    """
    best = losses.index(min(losses))
    tail = max(3, len(losses) // 10)
    if stopped == "end" and best >= len(losses) - tail:
        chosen = valley(lrs, losses)
        warning = (
            f"the loss was still falling at the sweep's last LR ({lrs[-1]:.2g}): no divergence "
            f"seen, so minimum/10 is not defined; used the valley rule ({chosen:.2e})"
        )
        return chosen, "valley (no divergence)", warning
    return max(lrs[0], lrs[best] / 10), "minimum/10", None

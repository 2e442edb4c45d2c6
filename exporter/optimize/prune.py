"""Structured channel pruning of a trained VGG16 with Torch-Pruning's dependency graph.

Unstructured sparsity does not speed up dense CPU kernels, so whole channels go: Torch-Pruning
(VainF/Torch-Pruning, DepGraph, CVPR 2023) traces the model, groups every layer that shares a
channel (a convolution's outputs, the next convolution's inputs, fc1's 49 columns per trunk
channel after the pooling) and removes each group at once. What is left is a smaller dense
torchvision ``VGG`` that every exporter, runtime and the pooling fold handle unchanged.

Choices (benchmarks/RESULTS.md, "Pruning" has the measurements):
- importance: the L2 norm of each group's weights (``GroupMagnitudeImportance(p=2)``); the
  distillation that follows recovers most of what the criterion gets wrong.
- per-layer ratio: the same fraction of every convolution (``ratio``), channel counts rounded
  to the nearest multiple of 8 (at least 8) so int8 and SIMD kernels stay on their fast paths;
- the head: fc1 and fc2 keep ``(1 - ratio)²`` of their 4096 neurons (1024 at ratio 0.5): at
  batch 1 reading fc2's 16.8M weights is a fifth of the int8 time, and its weights fall with
  the square of the width, like the convolutions' MACs with their channels;
- ``classifier[6]`` (the trained task head) is never pruned: the classes stay.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from exporter.core.errors import RuntimeUnavailable, UsageError
from exporter.model.shape import FC_WIDTH

if TYPE_CHECKING:
    from torch import nn

ROUND_TO = 8  # channel counts stay multiples of 8 (SIMD widths, int8 kernels)


def keep_count(channels: int, keep: float) -> int:
    """``channels · keep`` rounded to the nearest multiple of 8, and never below 8.

    Torch-Pruning's own rounding floors the *kept* count, which at high ratios reaches 0, and
    then it skips the layer entirely (64 channels at ratio 0.95 stayed 64): the counts are set
    here instead, per layer.
    """
    return max(ROUND_TO, round(channels * keep / ROUND_TO) * ROUND_TO)


def fc_keep_width(ratio: float) -> int:
    """Neurons fc1 and fc2 keep at conv pruning ``ratio``: ``4096 · (1 - ratio)²``, rounded to 8."""
    return keep_count(FC_WIDTH, (1.0 - ratio) ** 2)


def prune_vgg16(model: nn.Module, *, ratio: float, image_size: int) -> nn.Module:
    """A pruned copy of ``model`` (which is left untouched), in eval mode, without ``ratio``
    of each convolution's channels; traced once at ``image_size`` for the dependency graph.

    Raises:
        UsageError: ``ratio`` outside (0, 1).
        RuntimeUnavailable: Torch-Pruning is not installed.
    """
    if not 0.0 < ratio < 1.0:
        raise UsageError(f"--prune {ratio}: the pruning ratio must be in (0, 1)")
    try:
        import torch_pruning as tp
    except ImportError as exc:  # a declared dependency: only a broken install gets here
        raise RuntimeUnavailable(
            'pruning needs Torch-Pruning: pip install "torch-pruning>=1.6"'
        ) from exc
    import torch

    student = copy.deepcopy(model).cpu().eval()
    for p in student.parameters():
        p.requires_grad_(True)  # a frozen trunk must be prunable (and trainable after)
    head = student.classifier
    ratios: dict[nn.Module, float] = {
        conv: 1.0 - keep_count(conv.out_channels, 1.0 - ratio) / conv.out_channels
        for conv in student.features
        if isinstance(conv, torch.nn.Conv2d)
    }
    for fc in (head[0], head[3]):
        ratios[fc] = 1.0 - fc_keep_width(ratio) / fc.out_features
    example = torch.zeros(2, 3, image_size, image_size)
    pruner = tp.pruner.MetaPruner(
        student,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        pruning_ratio_dict=ratios,
        ignored_layers=[head[6]],
        round_to=ROUND_TO,
    )
    pruner.step()
    return student.eval()

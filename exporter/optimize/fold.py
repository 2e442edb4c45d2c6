"""Exact pooling fold: ``AdaptiveAvgPool2d((7, 7))`` → flatten → ``classifier[0]`` as one Linear.

Average pooling, flattening and the first fully connected layer are all linear, so for a
*fixed* input size they compose into a single Linear from the trunk's real output
(``512 × h × w``) to 4096: ``W' = W · P``, with ``P`` the pooling matrix. At 32 px the trunk
outputs ``512 × 1 × 1`` and pooling merely copies it 49 times, so fc1 shrinks from 102.8M to
2.1M parameters (the whole model from 134.3M to 33.6M) with the same outputs. At 224 px the
trunk already outputs ``7 × 7`` and ``P`` is the identity: folding gains nothing.

The folded model only accepts the size it was folded for; its artifacts carry
``input_constraints = {"fixed_hw": [H, W]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.core.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

POOL_HW = (7, 7)  # VGG16's AdaptiveAvgPool2d output size
_ROW_CHUNK = 256  # fc1 rows folded at a time (bounds the float64 scratch to ~50 MB)


def pooling_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int] = POOL_HW) -> torch.Tensor:
    """The matrix ``P`` (``out_h*out_w × in_h*in_w``) with ``pool(x).flatten() == P @ x.flatten()``.

    Column ``k`` is ``AdaptiveAvgPool2d`` applied to the ``k``-th basis image, so ``P`` follows
    its own index formula for any sizes, including ``in < out`` (cells then repeat inputs).
    """
    import torch

    if min(*in_hw, *out_hw) < 1:
        raise UsageError(f"pooling sizes must be >= 1, got input {in_hw} and output {out_hw}")
    n = in_hw[0] * in_hw[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, *in_hw)
    return torch.nn.functional.adaptive_avg_pool2d(basis, out_hw).reshape(n, -1).T


def trunk_output_hw(features: nn.Module, image_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of ``features`` applied to an ``image_hw`` input, by shape arithmetic.

    Raises:
        UsageError: ``features`` holds a layer whose effect on the size is unknown here.
    """
    from torch import nn

    h, w = image_hw
    for layer in features:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            h = _conv_out(h, layer, 0)
            w = _conv_out(w, layer, 1)
        elif not isinstance(layer, (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Identity)):
            raise UsageError(
                f"cannot fold: unexpected layer {layer.__class__.__name__} in model.features "
                "(the fold supports torchvision's VGG16 trunk)"
            )
    return h, w


def _conv_out(n: int, layer: nn.Module, dim: int) -> int:
    def pick(v: int | tuple[int, ...]) -> int:
        return v[dim] if isinstance(v, tuple) else int(v)

    k, s = pick(layer.kernel_size), pick(layer.stride)
    p, d = pick(layer.padding), pick(layer.dilation)
    if getattr(layer, "ceil_mode", False):
        return -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass(frozen=True)
class FoldPlan:
    """What folding at one input size does to fc1."""

    image_hw: tuple[int, int]
    trunk_hw: tuple[int, int]
    fc1_params_before: int
    fc1_params_after: int

    @property
    def is_identity(self) -> bool:
        """True when the trunk already outputs 7×7: pooling is the identity, nothing to gain."""
        return self.trunk_hw == POOL_HW

    @property
    def saves_parameters(self) -> bool:
        return self.fc1_params_after < self.fc1_params_before

    def to_dict(self) -> dict[str, object]:
        return {
            "image_hw": list(self.image_hw),
            "trunk_hw": list(self.trunk_hw),
            "fc1_params_before": self.fc1_params_before,
            "fc1_params_after": self.fc1_params_after,
            "pooling_is_identity": self.is_identity,
        }


def _normalise_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        try:
            hw = tuple(int(v) for v in image_size)  # type: ignore[assignment]
        except (TypeError, ValueError):
            hw = ()  # type: ignore[assignment]
        if len(hw) != 2:
            raise UsageError(f"fold image size must be an int or (H, W), got {image_size!r}")
    if min(hw) < 1:
        raise UsageError(f"fold image size must be positive, got {image_size!r}")
    return hw  # type: ignore[return-value]


def plan_fold(model: nn.Module, image_size: int | tuple[int, int]) -> FoldPlan:
    """Check that ``model`` can be folded at ``image_size`` and say what it would gain.

    Raises:
        UsageError: not a VGG16-shaped model, or the trunk output would be empty (< 32 px).
    """
    from torch import nn

    hw = _normalise_hw(image_size)
    features = getattr(model, "features", None)
    avgpool = getattr(model, "avgpool", None)
    classifier = getattr(model, "classifier", None)
    if (
        not isinstance(features, nn.Sequential)
        or not isinstance(avgpool, nn.AdaptiveAvgPool2d)
        or not isinstance(classifier, nn.Sequential)
        or not isinstance(classifier[0], nn.Linear)
    ):
        raise UsageError(
            "cannot fold: the model is not torchvision's VGG16 layout "
            "(features → AdaptiveAvgPool2d → classifier[0] Linear)"
        )
    out = avgpool.output_size
    out_hw = (out, out) if isinstance(out, int) else tuple(out)
    if out_hw != POOL_HW:
        raise UsageError(f"cannot fold: avgpool output size is {out_hw}, expected {POOL_HW}")
    trunk_hw = trunk_output_hw(features, hw)
    if min(trunk_hw) < 1:
        raise UsageError(
            f"cannot fold at {hw[0]}×{hw[1]} px: VGG16's trunk output would be "
            f"{trunk_hw[0]}×{trunk_hw[1]} (the model cannot run below 32 px); use an image "
            "size of at least 32"
        )
    fc1 = classifier[0]
    channels = fc1.in_features // (POOL_HW[0] * POOL_HW[1])
    if channels * POOL_HW[0] * POOL_HW[1] != fc1.in_features:
        raise UsageError(f"cannot fold: classifier[0] has {fc1.in_features} inputs, not C·7·7")
    after = fc1.out_features * channels * trunk_hw[0] * trunk_hw[1]
    return FoldPlan(
        image_hw=hw,
        trunk_hw=trunk_hw,
        fc1_params_before=fc1.weight.numel(),
        fc1_params_after=after,
    )


def _folded_module_class() -> type:
    from torch import nn

    class FoldedVGG16(nn.Module):
        """VGG16 with pool → flatten → fc1 folded into one Linear, for one fixed input size."""

        def __init__(
            self, features: nn.Module, fc1: nn.Linear, rest: nn.Module, image_hw: tuple[int, int]
        ) -> None:
            super().__init__()
            self.features = features
            self.fc1 = fc1
            self.rest = rest
            self.image_hw = image_hw

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            return self.rest(self.fc1(x.flatten(1)))

    return FoldedVGG16


def fold_vgg16(model: nn.Module, image_size: int | tuple[int, int]) -> nn.Module:
    """A new module computing ``model`` exactly for ``image_size`` inputs, with fc1 folded.

    The result is ``features → flatten → folded fc1 → classifier[1:]`` in eval mode. It
    shares ``features`` and the rest of the classifier with ``model`` (no copy of 58M
    weights); only fc1 is new. It gives wrong results for any other input size.

    Raises:
        UsageError: not VGG16-shaped, or the size is too small for the trunk (< 32 px).
    """
    import torch
    from torch import nn

    plan = plan_fold(model, image_size)
    fc1 = model.classifier[0]
    p = pooling_matrix(plan.trunk_hw)  # (49, h*w), float64 so the fold adds no rounding of its own
    channels = fc1.in_features // p.shape[0]
    out_features = fc1.out_features
    new_fc1 = nn.Linear(channels * p.shape[1], out_features, bias=fc1.bias is not None)
    with torch.no_grad():
        # Rows in chunks: fc1's weight in float64 at once would be ~0.8 GB.
        for start in range(0, out_features, _ROW_CHUNK):
            rows = fc1.weight[start : start + _ROW_CHUNK].detach().to(torch.float64)
            w = rows.reshape(rows.shape[0], channels, p.shape[0])
            folded = torch.einsum("ocq,qk->ock", w, p).reshape(rows.shape[0], -1)
            new_fc1.weight[start : start + _ROW_CHUNK].copy_(folded.to(fc1.weight.dtype))
        if fc1.bias is not None:
            new_fc1.bias.copy_(fc1.bias.detach())
    new_fc1.requires_grad_(False)
    folded = _folded_module_class()(model.features, new_fc1, model.classifier[1:], plan.image_hw)
    return folded.eval()

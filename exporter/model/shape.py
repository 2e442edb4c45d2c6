"""The shape of a VGG16-layout model: channels per convolution, fc widths, classes.

A structurally pruned VGG16 is still torchvision's ``VGG`` (same layers, same order, same
``features`` → ``avgpool`` → ``classifier`` layout), only narrower. :class:`VGGShape` records
how narrow, so the model can be rebuilt from a state dict and every exporter, runtime and
the pooling fold handle it unchanged. The layer list is torchvision's own (``cfgs["D"]``), and
so are the conv blocks ``--unfreeze-from`` counts (:func:`parse_unfreeze_from`).
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.core.errors import InputFileError, UsageError

if TYPE_CHECKING:
    from torch import nn

FC_WIDTH = 4096  # torchvision's classifier[0] and classifier[3] outputs
POOL_CELLS = 49  # AdaptiveAvgPool2d((7, 7))


@functools.cache
def vgg16_layout() -> tuple[int | str, ...]:
    """torchvision's VGG16 feature layout (``cfgs["D"]``): channel counts and ``"M"`` pools."""
    from torchvision.models.vgg import cfgs

    return tuple(cfgs["D"])


def block_ends() -> tuple[int, ...]:
    """Index in ``features`` of each conv block's last module (its max pool); a convolution
    is two modules there (conv, ReLU), a pool one."""
    ends, index = [], -1
    for item in vgg16_layout():
        index += 1 if item == "M" else 2
        if item == "M":
            ends.append(index)
    return tuple(ends)


def parse_unfreeze_from(spec: str | int) -> int:
    """Turn ``features.N`` or a number of conv blocks (counted from the top) into the index
    of the first ``features`` module to unfreeze.

    Raises:
        UsageError: not one of those forms, or outside VGG16's modules or blocks (exit 2).
    """
    ends = block_ends()
    text = str(spec).strip()
    m = re.fullmatch(r"features\.(\d+)", text)
    if m:
        idx = int(m.group(1))
        if not 0 <= idx <= ends[-1]:
            raise UsageError(f"--unfreeze-from {text}: VGG16 features has modules 0..{ends[-1]}")
        return idx
    if text.isdigit():
        blocks = int(text)
        if not 1 <= blocks <= len(ends):
            raise UsageError(
                f"--unfreeze-from {text}: number of conv blocks must be 1..{len(ends)}"
            )
        return 0 if blocks == len(ends) else ends[-blocks - 1] + 1
    raise UsageError(
        f"--unfreeze-from {text!r}: expected 'features.N' (e.g. features.24) or a number of "
        f"conv blocks 1..{len(ends)}"
    )


@dataclass(frozen=True)
class VGGShape:
    """How wide each layer of a VGG16-layout model is."""

    conv: tuple[int, ...]  # output channels of the 13 convolutions, in order
    fc: tuple[int, int]  # outputs of classifier[0] and classifier[3]
    num_classes: int  # outputs of classifier[6]

    @classmethod
    def full(cls, num_classes: int) -> VGGShape:
        """The unpruned VGG16."""
        conv = tuple(int(v) for v in vgg16_layout() if v != "M")
        return cls(conv=conv, fc=(FC_WIDTH, FC_WIDTH), num_classes=num_classes)

    @classmethod
    def of(cls, model: nn.Module) -> VGGShape:
        """Read the shape of a VGG16-layout module (pruned or not).

        Raises:
            InputFileError: the module is not VGG16-shaped.
        """
        from torch import nn

        convs = [m for m in getattr(model, "features", []) if isinstance(m, nn.Conv2d)]
        linears = [m for m in getattr(model, "classifier", []) if isinstance(m, nn.Linear)]
        if len(convs) != 13 or len(linears) != 3:
            raise InputFileError(
                f"not a VGG16-shaped model: {len(convs)} convolutions and {len(linears)} "
                "linear layers (expected 13 and 3)"
            )
        return cls(
            conv=tuple(c.out_channels for c in convs),
            fc=(linears[0].out_features, linears[1].out_features),
            num_classes=linears[2].out_features,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"conv": list(self.conv), "fc": list(self.fc), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> VGGShape:
        """Parse a recorded shape; ``source`` names the file in the error.

        Raises:
            InputFileError: missing keys, wrong counts, or non-positive widths.
        """
        try:
            conv = tuple(int(v) for v in data["conv"])
            fc = tuple(int(v) for v in data["fc"])
            classes = int(data["num_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(f"{source}: bad model shape record ({exc})") from exc
        if len(conv) != 13 or len(fc) != 2 or min((*conv, *fc, classes)) < 1:
            raise InputFileError(
                f"{source}: model shape needs 13 positive conv widths, 2 fc widths and "
                f"classes >= 1, got conv={list(conv)} fc={list(fc)} classes={classes}"
            )
        return cls(conv=conv, fc=(fc[0], fc[1]), num_classes=classes)

    def build(self) -> nn.Module:
        """An uninitialised model of this shape in eval mode (weights come from a state dict)."""
        import torch
        from torch import nn
        from torchvision.models.vgg import VGG, make_layers

        widths = iter(self.conv)
        layout = [v if v == "M" else next(widths) for v in vgg16_layout()]
        with torch.device("meta"):
            model = VGG(make_layers(layout), num_classes=self.num_classes, init_weights=False)
            model.classifier[0] = nn.Linear(self.conv[-1] * POOL_CELLS, self.fc[0])
            model.classifier[3] = nn.Linear(self.fc[0], self.fc[1])
            model.classifier[6] = nn.Linear(self.fc[1], self.num_classes)
        return model.to_empty(device="cpu").eval()

    def macs(self, image_size: int, *, folded: bool = False) -> int:
        """Multiply-accumulates of one image, by layer arithmetic (3×3 convs, 2×2 pools).

        ``folded``: the pooling fold's fc1 (``C·h·w`` inputs instead of ``C·49``).
        """
        total, side, cin = 0, image_size, 3
        widths = iter(self.conv)
        for v in vgg16_layout():
            if v == "M":
                side //= 2
                continue
            cout = next(widths)
            total += side * side * cin * cout * 9
            cin = cout
        fc1_in = self.conv[-1] * (side * side if folded else POOL_CELLS)
        total += fc1_in * self.fc[0] + self.fc[0] * self.fc[1] + self.fc[1] * self.num_classes
        return total

    def parameters(self, image_size: int | None = None) -> int:
        """Parameter count; with ``image_size``, of the model folded at that size."""
        total, cin = 0, 3
        for cout in self.conv:
            total += cin * cout * 9 + cout
            cin = cout
        cells = POOL_CELLS
        if image_size is not None:
            side = image_size // 32  # five 2×2 pools
            cells = min(POOL_CELLS, side * side)
        fc1_in = self.conv[-1] * cells
        fc = [fc1_in, *self.fc, self.num_classes]
        return total + sum(a * b + b for a, b in itertools.pairwise(fc))

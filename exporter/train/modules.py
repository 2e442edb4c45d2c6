"""Training-only modules: the head path, and dropout that does not depend on the batch split.

:class:`HeadPath` is ``avgpool → flatten → classifier`` of a VGG16 (its own submodules, not
copies): what trains while the trunk is frozen, and what DDP wraps then.

:class:`SampleDropout`: the mask of an image depends on (seed, epoch, image index, layer).

``nn.Dropout`` draws one mask for the whole batch from the process's RNG stream, so the mask
an image gets depends on which process it landed on and where in the batch it sits: two
processes with half a batch each would train a different model than one process with the
whole batch. Here every image draws its own mask from SplitMix64's stream seeded by a hash
of (seed, epoch, dataset index, layer), so the masks, and with them the gradients, are the same
however the global batch is split, and a resumed run needs no RNG state to redraw them.
Only training uses this module (imported lazily: it imports torch); the saved weights are
those of torchvision's VGG16.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HeadPath", "SampleDropout", "install_sample_dropout", "set_dropout_keys"]


class HeadPath(nn.Module):
    """``classifier(flatten(avgpool(features)))``: the model's forward after the trunk."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.avgpool = model.avgpool
        self.classifier = model.classifier

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        from exporter.train.device_setup import pool

        # pool() skips the adaptive pool at 7x7 (the identity): its backward has no
        # deterministic CUDA kernel.
        return self.classifier(torch.flatten(pool(self, f), 1))


_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15


def _signed(c: int) -> int:
    """A 64-bit number as the int64 that has the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _lsr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """One round of SplitMix64 (Steele et al., 2014), a fast, well-mixed 64-bit hash,
    element-wise on int64 bits (multiplication wraps mod 2**64)."""
    x = x + _signed(_GAMMA)
    x = (x ^ _lsr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _lsr(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _lsr(x, 31)


def sample_masks(keys: list[int], layer: int, features: int, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers, ``features`` per key: SplitMix64's stream seeded by key ^ layer.

    Integer arithmetic only, on the training device, so CPU and CUDA draw the same masks.
    """
    seeds = _splitmix64(torch.tensor([_signed(k ^ layer) for k in keys], dtype=torch.int64))
    steps = torch.arange(features, dtype=torch.int64, device=device) * _signed(_GAMMA)
    bits = _splitmix64(seeds.to(device)[:, None] + steps[None, :])
    return _lsr(bits, 40).to(torch.float32) * (1.0 / (1 << 24))  # top 24 bits


class SampleDropout(nn.Module):
    """Dropout with one mask per image, drawn from that image's key (see module doc)."""

    def __init__(self, p: float, layer: int) -> None:
        super().__init__()
        self.p = p
        self.layer = layer
        self.keys: list[int] | None = None  # set by set_dropout_keys before a forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.keys is None or len(self.keys) != x.shape[0]:
            # Not a training step of the loop (e.g. a user's own forward): plain dropout.
            return torch.nn.functional.dropout(x, self.p, training=True)
        keep = sample_masks(self.keys, self.layer, x.shape[1:].numel(), x.device) >= self.p
        scale = keep.to(x.dtype) / (1.0 - self.p)
        return x * scale.view(x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}, per-sample masks"


def install_sample_dropout(model: nn.Module) -> None:
    """Replace every ``nn.Dropout`` in ``model.classifier`` by a per-image one."""
    for i, mod in enumerate(model.classifier):
        if type(mod) is nn.Dropout:
            model.classifier[i] = SampleDropout(mod.p, layer=i)


def set_dropout_keys(model: nn.Module, *, seed: int, epoch: int, indices: torch.Tensor) -> None:
    """Key the next forward's dropout masks by these dataset indices (one per batch row): an
    image's key is SplitMix64 chained over (seed, epoch, index)."""
    h = _splitmix64(torch.tensor(_signed(seed & _MASK64)))
    h = _splitmix64(h ^ _signed(epoch & _MASK64))
    keys = _splitmix64(h ^ indices.to(torch.int64)).tolist()
    for mod in model.classifier:
        if isinstance(mod, SampleDropout):
            mod.keys = keys

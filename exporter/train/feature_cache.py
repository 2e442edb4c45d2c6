"""Feature cache: run the frozen trunk once, then train the head on its stored outputs.

While every parameter of ``features`` is frozen and the images are not augmented, the
trunk's output for an image never changes, so computing it every epoch is waste. The
cache stores the trunk output *before* ``avgpool`` (512×1×1 at 32 px, 512×7×7 at 224 px) so
the head path (avgpool → flatten → classifier) is exactly the model's own forward.
Large caches go to a temporary ``np.memmap`` file instead of memory. Under torchrun each
rank runs the trunk over its own shard (:func:`build_sharded_cache`): the training cache is
then exchanged so any global batch can be served on any rank, the validation cache stays a
slice (evaluation is sharded the same way).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from exporter.train.distributed import DistContext

# Above this many bytes the cache lives in a temp file (the OS pages it in as needed).
MEMMAP_THRESHOLD_BYTES = int(os.environ.get("TLX_CACHE_MEMMAP_BYTES", 2 << 30))


@dataclass
class FeatureCache:
    """Trunk outputs of one dataset split, in dataset order, with their labels."""

    features: np.ndarray  # float32 (n, C, h, w), ndarray or memmap
    labels: np.ndarray  # int64 (n,)
    _tmp: Any = field(default=None, repr=False)  # the memmap's temp file

    @property
    def storage(self) -> str:
        return "memory" if self._tmp is None else "memmap"

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.features[idx])), torch.from_numpy(
            self.labels[idx]
        )

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.close()  # deletes the temp file
            self._tmp = None


def build_feature_cache(
    trunk: nn.Module,
    dataset: Any,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    channels_last: bool = False,
    autocast: Callable[[], Any] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> FeatureCache:
    """Run ``trunk`` (eval mode, no grad) once over ``dataset`` and keep the outputs.

    Args:
        trunk: ``model.features`` (frozen).
        dataset: yields ``(CHW tensor, label)`` with a deterministic transform.
        batch_size: images per forward pass.
        device: where the trunk runs.
        workers: DataLoader worker processes.
        channels_last: convert inputs to channels-last memory format (CUDA speed).
        autocast: a context-manager factory for mixed precision, or None.
        on_batch: called with ``(done, total)`` after each batch (progress, interrupts).
    """
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    n = len(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),  # never touch the global RNG
    )
    was_training = trunk.training
    trunk.eval()
    feats: np.ndarray | None = None
    labels = np.empty(n, dtype=np.int64)
    tmp = None
    done = 0
    try:
        with torch.no_grad():
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast() if autocast else contextlib.nullcontext():
                    out = trunk(x)
                out = out.float().cpu().numpy()
                if feats is None:
                    feats, tmp = _allocate((n, *out.shape[1:]))
                feats[done : done + len(out)] = out
                labels[done : done + len(out)] = y.numpy()
                done += len(out)
                if on_batch is not None:
                    on_batch(done, n)
    except BaseException:
        if tmp is not None:
            tmp.close()
        raise
    finally:
        trunk.train(was_training)
    assert feats is not None  # n >= 1 is guaranteed by the dataset builders
    return FeatureCache(feats, labels, tmp)


def _allocate(shape: tuple[int, ...]) -> tuple[np.ndarray, Any]:
    """float32 rows in memory, or in a temp file above :data:`MEMMAP_THRESHOLD_BYTES` (the
    file lives as long as the cache: :meth:`FeatureCache.close` deletes it)."""
    if int(np.prod(shape)) * 4 <= MEMMAP_THRESHOLD_BYTES:
        return np.empty(shape, dtype=np.float32), None
    tmp = tempfile.NamedTemporaryFile(prefix="tlx-feature-cache-")  # noqa: SIM115
    return np.memmap(tmp.name, dtype=np.float32, mode="w+", shape=shape), tmp


# Bytes per all_gather message when shards are exchanged (bounds the extra memory in flight).
GATHER_CHUNK_BYTES = 64 << 20


def build_sharded_cache(
    trunk: nn.Module,
    dataset: Any,
    *,
    dist: DistContext,
    gather: bool,
    batch_size: int,
    device: torch.device,
    **kw: Any,
) -> FeatureCache:
    """The feature cache built per shard: each rank runs the trunk over its own slice only.

    Args:
        trunk: ``model.features`` (frozen).
        dataset: the whole split; this rank's slice is :func:`shard_range`.
        dist: the process group (a world of one builds the whole split, as
            :func:`build_feature_cache`).
        gather: exchange the shards afterwards so every rank holds the whole split in dataset
            order (training: a global batch draws from every shard); without it the cache
            holds this rank's slice only (evaluation).
        batch_size: images per forward pass.
        device: where the trunk runs.
        **kw: passed on to :func:`build_feature_cache`.
    """
    from exporter.data.datasets import SubsetDataset
    from exporter.train.distributed import shard_range

    if not dist.enabled:
        return build_feature_cache(trunk, dataset, batch_size=batch_size, device=device, **kw)
    n = len(dataset)
    start, stop = shard_range(n, dist.rank, dist.world_size)
    local = None
    if stop > start:
        shard = SubsetDataset(dataset, np.arange(start, stop))
        local = build_feature_cache(trunk, shard, batch_size=batch_size, device=device, **kw)
    shapes = dist.gather_object(None if local is None else tuple(local.features.shape[1:]))
    shape = next(s for s in shapes if s is not None)  # n >= 1, so some rank has rows
    if local is None:
        local = FeatureCache(np.empty((0, *shape), np.float32), np.empty(0, np.int64))
    if not gather:
        return local
    try:
        return _gather_shards(local, n, shape, dist)
    finally:
        local.close()


def _gather_shards(
    local: FeatureCache, n: int, shape: tuple[int, ...], dist: DistContext
) -> FeatureCache:
    """Every rank's shard, concatenated in rank order (= dataset order), on every rank."""
    import torch

    from exporter.train.distributed import shard_range

    ranges = [shard_range(n, r, dist.world_size) for r in range(dist.world_size)]
    counts = [b - a for a, b in ranges]
    feats, tmp = _allocate((n, *shape))
    labels = np.empty(n, dtype=np.int64)
    rows = max(1, GATHER_CHUNK_BYTES // max(1, int(np.prod(shape)) * 4))
    try:
        for lo in range(0, max(counts), rows):
            part = [max(0, min(c, lo + rows) - lo) for c in counts]
            mine = slice(lo, lo + part[dist.rank])
            got = dist.all_gather_rows(torch.from_numpy(local.features[mine]), part)
            lab = dist.all_gather_rows(torch.from_numpy(local.labels[mine]), part)
            for (a, _), f, y in zip(ranges, got, lab, strict=True):
                feats[a + lo : a + lo + len(f)] = f.numpy()
                labels[a + lo : a + lo + len(y)] = y.numpy()
    except BaseException:
        if tmp is not None:
            tmp.close()
        raise
    return FeatureCache(feats, labels, tmp)

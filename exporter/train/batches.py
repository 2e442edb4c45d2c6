"""What one rank trains and validates on: images from its loaders, or the trunk's cached outputs.

The global batch (``--batch-size``) is split evenly over the ranks. The epoch's order is
``DistributedSampler``'s shuffle of (seed, epoch) (``set_epoch`` every epoch), and rank ``r``
takes positions ``r, r + W, r + 2W, ...`` of it, so the ranks' step-``k`` shares together are
exactly the images a single process would train on at step ``k``. The sampler pads the order
to a multiple of the world size with repeated images; those pads have weight 0 in the loss
and are left out of every count. Validation is split into contiguous slices
(:func:`shard_range`: no padding, so no image is counted twice).

The feature cache: while every parameter of ``features`` is frozen and the images are not
augmented (``--cache-features auto``), the trunk's output for an image never changes, so
computing it every epoch is waste. The cache stores the trunk output *before* ``avgpool``
(512×1×1 at 32 px, 512×7×7 at 224 px) so the head path (avgpool → flatten → classifier) is
exactly the model's own forward. Large caches go to a temporary ``np.memmap`` file instead of
memory. Each rank runs the trunk over its own slice of a split: the training cache is then
exchanged so any global batch can be served on any rank, the validation cache stays a slice
(evaluation is sharded the same way).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from exporter.train.distributed import DistContext, shard_range

if TYPE_CHECKING:
    from exporter.core.config import TrainConfig
    from exporter.train.learner import Learner

__all__ = ["Batches", "EpochBatches", "FeatureCache", "index_batches"]

Progress = Callable[[int, int], None]
# Above this many bytes the cache lives in a temp file (the OS pages it in as needed).
MEMMAP_THRESHOLD_BYTES = int(os.environ.get("TLX_CACHE_MEMMAP_BYTES", 2 << 30))
# Bytes per all_gather message when shards are exchanged (bounds the extra memory in flight).
GATHER_CHUNK_BYTES = 64 << 20


def index_batches(
    dataset: Any, *, batch_size: int, seed: int, dist: DistContext, epoch: int, start_step: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """This rank's (dataset indices, is-real mask) per step of ``epoch``, from ``start_step``."""
    n = len(dataset)
    world, rank = dist.world_size, dist.rank
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    local = np.fromiter(iter(sampler), dtype=np.int64)
    real = rank + world * np.arange(len(local)) < n  # positions past n are the padding
    share = batch_size // world
    starts = range(0, len(local), share)
    return [(local[s : s + share], real[s : s + share]) for s in starts][start_step:]


class EpochBatches:
    """A batch sampler whose batches are replaced each epoch.

    A DataLoader built once over it can keep ``persistent_workers``: workers are not
    re-forked every epoch (the sampler is read in the main process at each iteration).
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def set(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [list(map(int, b)) for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class FeatureCache:
    """Trunk outputs of one dataset split (or a rank's slice), in dataset order, with labels."""

    features: np.ndarray  # float32 (n, C, h, w), ndarray or memmap
    labels: np.ndarray  # int64 (n,)
    _tmp: Any = field(default=None, repr=False)  # the memmap's temp file

    @property
    def storage(self) -> str:
        return "memory" if self._tmp is None else "memmap"

    @classmethod
    def allocate(cls, shape: tuple[int, ...]) -> FeatureCache:
        """Room for ``shape[0]`` rows: in memory, or in a temp file above
        :data:`MEMMAP_THRESHOLD_BYTES` (the file lives until :meth:`close` deletes it)."""
        labels = np.empty(shape[0], dtype=np.int64)
        if int(np.prod(shape)) * 4 <= MEMMAP_THRESHOLD_BYTES:
            return cls(np.empty(shape, dtype=np.float32), labels)
        tmp = tempfile.NamedTemporaryFile(prefix="tlx-feature-cache-")  # noqa: SIM115
        return cls(np.memmap(tmp.name, dtype=np.float32, mode="w+", shape=shape), labels, tmp)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.from_numpy(np.ascontiguousarray(self.features[idx]))
        return features, torch.from_numpy(self.labels[idx])

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.close()  # deletes the temp file
            self._tmp = None


class Batches:
    """This rank's batches of both splits; the loaders (built once, so persistent workers
    live across epochs) and the feature caches are held until :meth:`close`."""

    def __init__(
        self,
        bundle: Any,
        learner: Learner,
        *,
        cfg: TrainConfig,
        augment: bool,
        check_stop: Callable[[], None],
    ) -> None:
        from exporter.core.machine import usable_cpus

        self.bundle, self.learner, self.dist = bundle, learner, learner.dist
        self.batch_size, self.seed, self.check_stop = cfg.batch_size, cfg.seed, check_stop
        self.workers = cfg.workers  # loader processes pay off when they feed a GPU
        if self.workers is None:
            self.workers = min(8, usable_cpus()) if learner.device.type == "cuda" else 0
        # "auto" caches only un-augmented images: an augmented image's output changes.
        self.cache_wanted = cfg.cache_features == "on" or (
            cfg.cache_features == "auto" and not augment
        )
        self.train_cache: FeatureCache | None = None
        self.val_cache: FeatureCache | None = None
        self.cache_info: dict[str, Any] = {"used": False, "epochs": []}  # train.json's
        self._loaders: dict[str, DataLoader] = {}
        self._epoch_batches = EpochBatches()

    @property
    def cacheable(self) -> bool:
        """Whether training may run on the trunk's cached outputs now (the trunk is frozen)."""
        return self.cache_wanted and not self.learner.unfrozen

    def build_cache(self, progress: Progress) -> None:
        """Run the trunk once over both splits, calling ``progress(done, total)`` per batch."""
        t = time.perf_counter()
        self.train_cache = self._run_trunk(self.bundle.train, on_batch=progress, gather=True)
        self.val_cache = self._run_trunk(self.bundle.val, on_batch=progress, gather=False)
        row = self.train_cache.features.nbytes // len(self.bundle.train)
        self.cache_info.update(
            used=True,
            build_seconds=round(time.perf_counter() - t, 3),
            # The whole cache, as one process holds it (a rank holds a slice of val only).
            bytes=row * (len(self.bundle.train) + len(self.bundle.val)),
            storage=self.train_cache.storage,
            feature_shape=list(self.train_cache.features.shape[1:]),
        )

    def train(
        self, epoch: int, start_step: int, cached: bool
    ) -> Iterator[tuple[Any, Any, np.ndarray, np.ndarray]]:
        """``(x, y, indices, real)`` of this rank's shares of ``epoch`` from ``start_step``."""
        steps = index_batches(
            self.bundle.train,
            batch_size=self.batch_size,
            seed=self.seed,
            dist=self.dist,
            epoch=epoch,
            start_step=start_step,
        )
        if cached:
            assert self.train_cache is not None
            for idx, real in steps:
                yield (*self.train_cache.batch(idx), idx, real)
            return
        self._epoch_batches.set([idx.tolist() for idx, _ in steps])
        rank_seed = self.seed + 7919 * self.dist.rank
        loader = self._loader(
            "train",
            self.bundle.train,
            batch_sampler=self._epoch_batches,
            generator=torch.Generator().manual_seed(rank_seed),
        )
        for (x, y), (idx, real) in zip(loader, steps, strict=True):
            yield x, y, idx, real

    def val(self, cached: bool) -> Iterable[tuple[Any, Any]]:
        """This rank's slice of val in batches (the val cache holds that slice only)."""
        from exporter.data.datasets import SubsetDataset

        bs = max(1, self.batch_size // self.dist.world_size)
        if cached:
            assert self.val_cache is not None
            cache, n = self.val_cache, len(self.val_cache.labels)
            return (cache.batch(np.arange(i, min(n, i + bs))) for i in range(0, n, bs))
        val = self.bundle.val
        start, stop = shard_range(len(val), self.dist.rank, self.dist.world_size)
        if self.dist.enabled:
            val = SubsetDataset(val, np.arange(start, stop))
        if len(val) == 0:
            return iter(())
        return self._loader("val", val, batch_size=bs, generator=torch.Generator().manual_seed(0))

    def trunk_sample(self, limit: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk outputs and labels of up to ``limit`` training images: cached rows, or a
        pass of the trunk over a seeded subset (eval transform)."""
        from exporter.data.datasets import limit_split

        if self.cacheable and self.train_cache is not None:
            total = len(self.train_cache.labels)
            rng = np.random.default_rng(seed)
            return self.train_cache.batch(np.sort(rng.permutation(total)[: min(limit, total)]))
        cache = self._run_trunk(limit_split(self.bundle.train, limit, seed=seed, split="train"))
        try:
            return cache.batch(np.arange(len(cache.labels)))
        finally:
            cache.close()

    def close(self) -> None:
        """Free the caches and the loaders (their persistent workers end with them)."""
        self._loaders.clear()
        for c in (self.train_cache, self.val_cache):
            if c is not None:
                c.close()
        self.train_cache = self.val_cache = None

    def _loader(self, name: str, dataset: Any, **kw: Any) -> DataLoader:
        if name not in self._loaders:
            self._loaders[name] = DataLoader(
                dataset,
                num_workers=self.workers,
                pin_memory=self.learner.device.type == "cuda",
                persistent_workers=self.workers > 0,
                **kw,
            )
        return self._loaders[name]

    def _run_trunk(
        self, ds: Any, on_batch: Progress | None = None, gather: bool | None = None
    ) -> FeatureCache:
        """The frozen trunk over ``ds`` on un-augmented images. ``gather`` None: all of ``ds``
        on this rank. Else each rank runs its own slice (:func:`shard_range`); with
        ``gather`` the slices are then exchanged so every rank holds the whole split in
        dataset order (training: a global batch draws from every slice), without it the
        cache holds this rank's slice only (evaluation)."""
        from exporter.data.datasets import SubsetDataset

        dist, saved_tf = self.dist, ds.transform
        ds.transform = self.bundle.preprocessing.eval_transform()
        try:
            if gather is None or not dist.enabled:
                return self._trunk_pass(ds, on_batch)
            n = len(ds)
            start, stop = shard_range(n, dist.rank, dist.world_size)
            local = None
            if stop > start:
                local = self._trunk_pass(SubsetDataset(ds, np.arange(start, stop)), on_batch)
            shapes = dist.gather_object(None if local is None else local.features.shape[1:])
            shape = next(s for s in shapes if s is not None)  # n >= 1, so some rank has rows
            if local is None:
                local = FeatureCache(np.empty((0, *shape), np.float32), np.empty(0, np.int64))
            if not gather:
                return local
            try:
                return _gather_shards(local, n, shape, dist)
            finally:
                local.close()
        finally:
            ds.transform = saved_tf

    def _trunk_pass(self, ds: Any, on_batch: Progress | None) -> FeatureCache:
        """Run the trunk (eval mode, no grad) once over ``ds`` and keep its outputs."""
        learner, n = self.learner, len(ds)
        loader = DataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=learner.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # never touch the global RNG
        )
        trunk = learner.model.features
        was_training = trunk.training
        trunk.eval()
        cache: FeatureCache | None = None
        done = 0
        try:
            with torch.no_grad():
                for x, y in loader:
                    with learner.autocast():
                        out = trunk(learner.inputs(x, cached=False))
                    out = out.float().cpu().numpy()
                    if cache is None:
                        cache = FeatureCache.allocate((n, *out.shape[1:]))
                    cache.features[done : done + len(out)] = out
                    cache.labels[done : done + len(out)] = y.numpy()
                    done += len(out)
                    if on_batch is not None:
                        on_batch(done, n)
                    self.check_stop()
        except BaseException:
            if cache is not None:
                cache.close()
            raise
        finally:
            trunk.train(was_training)
        assert cache is not None  # n >= 1 is guaranteed by the dataset builders
        return cache


def _gather_shards(
    local: FeatureCache, n: int, shape: tuple[int, ...], dist: DistContext
) -> FeatureCache:
    """Every rank's shard, concatenated in rank order (= dataset order), on every rank."""
    ranges = [shard_range(n, r, dist.world_size) for r in range(dist.world_size)]
    counts = [b - a for a, b in ranges]
    cache = FeatureCache.allocate((n, *shape))
    rows = max(1, GATHER_CHUNK_BYTES // max(1, int(np.prod(shape)) * 4))
    try:
        for lo in range(0, max(counts), rows):
            part = [max(0, min(c, lo + rows) - lo) for c in counts]
            mine = slice(lo, lo + part[dist.rank])
            got = dist.all_gather_rows(torch.from_numpy(local.features[mine]), part)
            lab = dist.all_gather_rows(torch.from_numpy(local.labels[mine]), part)
            for (a, _), f, y in zip(ranges, got, lab, strict=True):
                cache.features[a + lo : a + lo + len(f)] = f.numpy()
                cache.labels[a + lo : a + lo + len(y)] = y.numpy()
    except BaseException:
        cache.close()
        raise
    return cache

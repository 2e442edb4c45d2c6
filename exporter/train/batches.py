"""What one rank trains and validates on: images from its loaders, or the trunk's cached outputs.

The global batch (``--batch-size``) is split evenly over the ranks. The epoch's order is
``DistributedSampler``'s shuffle of (seed, epoch) (``set_epoch`` every epoch), and rank ``r``
takes positions ``r, r + W, r + 2W, ...`` of it, so the ranks' step-``k`` shares together are
exactly the images a single process would train on at step ``k``. The sampler pads the order
to a multiple of the world size with repeated images; those pads have weight 0 in the loss
and are left out of every count. Validation is split into contiguous slices
(:func:`shard_range`: no padding, so no image is counted twice).

While the trunk is frozen (and, with ``--cache-features auto``, images are not augmented),
the batches are the trunk's outputs, computed once (``feature_cache.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from exporter.train.distributed import DistContext, shard_range
from exporter.train.feature_cache import FeatureCache, build_feature_cache, build_sharded_cache

if TYPE_CHECKING:
    from exporter.core.config import TrainConfig
    from exporter.train.learner import Learner

__all__ = ["Batches", "EpochBatches", "index_batches"]

Progress = Callable[[int, int], None]


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
        row = self.train_cache.nbytes // len(self.bundle.train)
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
        """The frozen trunk over ``ds`` on un-augmented images; ``gather`` None: all of ``ds``
        on this rank, True/False: per shard, exchanged or not (``build_sharded_cache``)."""
        learner = self.learner

        def tick(done: int, total: int) -> None:
            if on_batch is not None:
                on_batch(done, total)
            self.check_stop()

        saved_tf = ds.transform
        ds.transform = self.bundle.preprocessing.eval_transform()
        kw: dict[str, Any] = {
            "batch_size": self.batch_size,
            "device": learner.device,
            "workers": self.workers,
            "channels_last": learner.channels_last,
            "autocast": learner.autocast,
            "on_batch": tick,
        }
        try:
            if gather is None:
                return build_feature_cache(learner.model.features, ds, **kw)
            trunk = learner.model.features
            return build_sharded_cache(trunk, ds, dist=self.dist, gather=gather, **kw)
        finally:
            ds.transform = saved_tf

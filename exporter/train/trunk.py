"""The frozen trunk's outputs: the feature cache and the ``--lr auto`` range test.

Under torchrun the cache is built per shard (each rank runs the trunk over its slice only):
the training cache is then exchanged so any global batch can be served on any rank, the
validation cache stays a slice (evaluation is sharded the same way). The range test runs on
rank 0 over the same images a single process would use and its LR is broadcast.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.runfolder import LR_FIND_PNG

if TYPE_CHECKING:
    import torch


class TrunkMixin:
    """Feature cache and LR finder of :class:`~exporter.train.loop.Trainer`."""

    def _use_cache(self) -> bool:
        mode = self.cfg.cache_features
        if mode == "off" or self.unfrozen:
            return False
        return mode == "on" or not self.augment

    def _free_cache(self) -> None:
        getattr(self, "_loaders", {}).clear()  # persistent workers end with their loader
        for c in (self.train_cache, self.val_cache):
            if c is not None:
                c.close()
        self.train_cache = self.val_cache = None

    def _build_caches(self) -> None:
        t = time.perf_counter()

        def progress(done: int, total: int) -> None:
            self._emit("cache", step=done, steps=total)

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

    def _find_lr(self) -> None:
        """``--lr auto``: the LR range test on the new head layer picks the peak LR."""
        if self._use_cache() and self.train_cache is None:
            self._build_caches()  # training uses it next: not part of the finder's cost
        result = self._range_test() if self.dist.is_main else None
        chosen, self.lr_finder = self.dist.broadcast_object(
            (result.chosen_lr, result.to_dict()) if result is not None else None
        )
        self.peak_lr = chosen
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"] = chosen

    def _range_test(self) -> Any:
        from exporter.train.lr_finder import MAX_IMAGES, find_lr, plot_lr_find

        t = time.perf_counter()
        if self._use_cache():
            total = len(self.train_cache.labels)
            rng = np.random.default_rng(self.cfg.seed)
            pick = np.sort(rng.permutation(total)[: min(MAX_IMAGES, total)])
            feats, labels = self.train_cache.batch(pick)
        else:
            feats, labels = self._trunk_features(MAX_IMAGES)
        cfg = self.cfg
        self._emit("lr_find", epoch=self.epoch)
        with self._autocast():
            result = find_lr(
                self.model.classifier,
                feats.to(self.device),
                labels.to(self.device),
                avgpool=self.model.avgpool,
                optimizer=cfg.optimizer,
                weight_decay=cfg.weight_decay,
                momentum=cfg.momentum,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
            )
        result.seconds = round(time.perf_counter() - t, 3)  # with the finder's own features
        plot_lr_find(result, self.run_dir / LR_FIND_PNG)
        return result

    def _trunk_features(self, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk outputs of up to ``limit`` training images (eval transform), when uncached."""
        from exporter.data.datasets import limit_split

        subset = limit_split(self.bundle.train, limit, seed=self.cfg.seed, split="train")
        cache = self._run_trunk(subset)
        try:
            return cache.batch(np.arange(len(cache.labels)))
        finally:
            cache.close()

    def _run_trunk(self, ds: Any, on_batch: Any = None, gather: bool | None = None) -> Any:
        """The frozen trunk over ``ds`` on un-augmented images (a :class:`FeatureCache`).

        ``gather`` None: all of ``ds`` on this rank; True/False: per shard, exchanged or not
        (:func:`~exporter.train.feature_cache.build_sharded_cache`).
        """
        from exporter.train.feature_cache import build_feature_cache, build_sharded_cache

        saved_tf = ds.transform
        ds.transform = self.bundle.preprocessing.eval_transform()
        kw: dict[str, Any] = {
            "batch_size": self.cfg.batch_size,
            "device": self.device,
            "workers": self.workers,
            "channels_last": self.channels_last,
            "autocast": self._autocast,
            "on_batch": lambda done, total: (
                on_batch(done, total) if on_batch else None,
                self._check_stop(),
            ),
        }
        try:
            if gather is None:
                return build_feature_cache(self.model.features, ds, **kw)
            return build_sharded_cache(self.model.features, ds, dist=self.dist, gather=gather, **kw)
        finally:
            ds.transform = saved_tf

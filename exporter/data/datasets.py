"""Datasets for training and evaluation: cifar10, imagefolder and synthetic.

Transforms come only from :class:`~exporter.core.preprocess.Preprocessing`, so training,
verification and deployment all see the same pixels. The library never prints: images it
had to skip are returned in :attr:`DataBundle.skipped` (and reported as one ``warnings``
warning each) for the CLI to show and ``train.json`` to count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import AUGMENT_MIN_SIZE, DataConfig
from exporter.core.errors import EnvironmentUnavailable, InputFileError, UsageError
from exporter.core.preprocess import Preprocessing
from exporter.core.runfolder import TRAIN_JSON
from exporter.data.imagefolder import (
    SPLITS,
    imagefolder_classes,
    imagefolder_root,
    imagefolder_split,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from exporter.core.runfolder import Run


@dataclass
class ArrayDataset:
    """Images held in memory as uint8 HWC arrays (synthetic data, CIFAR-10)."""

    images: np.ndarray
    labels: np.ndarray
    transform: Callable[[Any], Any] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.images[i])  # HWC uint8 -> RGB
        return (self.transform(img) if self.transform else img), int(self.labels[i])


class SubsetDataset:
    """The items of ``base`` at ``indices``; ``transform`` reads and writes the base's."""

    def __init__(self, base: Any, indices: np.ndarray) -> None:
        self.base = base
        self.indices = indices

    @property
    def transform(self) -> Callable[[Any], Any] | None:
        return self.base.transform

    @transform.setter
    def transform(self, tf: Callable[[Any], Any] | None) -> None:
        self.base.transform = tf

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.base[int(self.indices[i])]


def limit_split(dataset: Any, limit: int | None, *, seed: int, split: str) -> Any:
    """A seeded random subset of ``limit`` items of one split (index order kept).

    ``None`` or a limit at least the split's size returns ``dataset`` itself. The subset
    depends only on ``(seed, split, len(dataset), limit)``, so export and verify rebuild the
    same images from train.json.
    """
    if limit is None or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return SubsetDataset(dataset, np.sort(rng.choice(len(dataset), size=limit, replace=False)))


@dataclass
class DataBundle:
    """Train and val datasets with the facts train.json records about them."""

    name: str
    train: Any
    val: Any
    class_names: list[str]
    preprocessing: Preprocessing
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        """The ``dataset`` block of train.json."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "train_size": len(self.train),
            "val_size": len(self.val),
            "skipped_images": list(self.skipped),
            "skipped_count": len(self.skipped),
        }


def resolve_augment(cfg: DataConfig) -> tuple[bool, str]:
    """Whether training images are augmented, and why (recorded in train.json): the one data
    choice that depends on the run's size, made here so the datasets that apply it do not
    import the training stage."""
    if cfg.augment == "on":
        return True, "--augment on"
    if cfg.augment == "off":
        return False, "--augment off"
    if cfg.image_size < AUGMENT_MIN_SIZE:
        return False, f"auto: off below {AUGMENT_MIN_SIZE} px (image size {cfg.image_size})"
    return True, f"auto: on from {AUGMENT_MIN_SIZE} px (image size {cfg.image_size})"


def build_datasets(cfg: DataConfig) -> DataBundle:
    """Build the train and val datasets described by ``cfg``.

    Train images get the train transform, augmented as
    :func:`resolve_augment` decides; val images the eval transform.

    Raises:
        UsageError: an empty or mis-shaped image folder (bad values are refused by
            :class:`DataConfig` itself).
        InputFileError: a missing folder, or an unreadable image with ``strict=True``.
        EnvironmentUnavailable: CIFAR-10 is not on disk and cannot be downloaded.
    """
    pre = Preprocessing(image_size=cfg.image_size)
    skipped: list[dict[str, str]] = []
    name, classes, (train, val) = _open(cfg, SPLITS, skipped)
    train.transform = pre.train_transform(augment=resolve_augment(cfg)[0])
    val.transform = pre.eval_transform()
    train = limit_split(train, cfg.limit_train, seed=cfg.seed, split="train")
    val = limit_split(val, cfg.limit_val, seed=cfg.seed, split="val")
    return DataBundle(name, train, val, classes, pre, skipped)


def _open(
    cfg: DataConfig, splits: tuple[str, ...], skipped: list[dict[str, str]]
) -> tuple[str, list[str], list[Any]]:
    """The dataset's name, its class names and ``splits`` without a transform (PIL images
    out); an image folder's unreadable images go to ``skipped``."""
    if cfg.source == "synthetic":
        from exporter.data.synthetic import SYNTHETIC_CLASS_NAMES, make_synthetic

        sizes = {"train": cfg.train_size, "val": cfg.val_size}
        data = [ArrayDataset(*make_synthetic(sizes[s], seed=cfg.seed, split=s)) for s in splits]
        return "synthetic", list(SYNTHETIC_CLASS_NAMES), data
    if cfg.source == "cifar10":
        root = cifar10_dir(cfg)
        bases = [_cifar10_split(root, train=s == "train") for s in splits]
        # torchvision's CIFAR10 holds its images as uint8 HWC arrays too (``data``).
        data = [ArrayDataset(b.data, np.asarray(b.targets, dtype=np.int64)) for b in bases]
        return "cifar10", list(bases[0].classes), data
    root = imagefolder_root(str(cfg.data_dir))
    classes = imagefolder_classes(root)
    data = [
        imagefolder_split(root / s, classes, strict=cfg.strict, skipped=skipped) for s in splits
    ]
    return root.name or "imagefolder", classes, data


def load_eval_images(
    info: Run, n: int, *, split: str = "val", seed: int = 0, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Real held-out images of a run, through the run's recorded eval transform.

    The dataset is rebuilt from ``train.json["config"]["data"]`` and the transform from
    ``train.json["preprocessing"]``, so the pixels match what the model was validated on.

    Args:
        n: how many images; all of the split if it has fewer.
        seed: chooses which ``n`` images (same seed, same images, in index order).
        data_dir: where the run's image folder (or CIFAR-10) is now, when it moved since
            training; None: where train.json says.

    Returns:
        ``(images, labels)``: float32 NCHW and int64, ``min(n, len(split))`` of each.

    Raises:
        UsageError: bad ``n`` or ``split``, or the run's data config is unusable.
        InputFileError / EnvironmentUnavailable: as :func:`build_datasets`.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 1:
        raise UsageError(f"number of evaluation images must be >= 1, got {n}")
    raw = info.data_config
    if not raw:
        raise InputFileError(
            f"{info.run_dir / TRAIN_JSON} has no config.data section: cannot rebuild its data"
        )
    try:
        cfg = DataConfig.from_dict(raw)
    except (TypeError, ValueError, UsageError) as exc:  # a hand-edited record: name the file
        raise InputFileError(f"{info.run_dir / TRAIN_JSON}: bad config.data: {exc}") from exc
    if data_dir is not None:
        cfg = replace(cfg, data_dir=data_dir)
    limit = cfg.limit_train if split == "train" else cfg.limit_val
    dataset = limit_split(_open(cfg, (split,), [])[2][0], limit, seed=cfg.seed, split=split)
    total = len(dataset)
    if n >= total:
        idx = np.arange(total)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    tf = info.preprocessing.eval_transform()
    size = info.preprocessing.image_size
    images = np.empty((len(idx), 3, size, size), dtype=np.float32)
    labels = np.empty(len(idx), dtype=np.int64)
    for j, i in enumerate(idx):
        img, label = dataset[int(i)]
        images[j] = tf(img).numpy()
        labels[j] = label
    return images, labels


def check_data_dir(cfg: DataConfig) -> None:
    """The environment check of a data config, before any heavy work: an image folder exists
    with train/ and val/ class folders (its values were checked by DataConfig itself)."""
    if cfg.source == "imagefolder":
        imagefolder_classes(imagefolder_root(str(cfg.data_dir)))


# --- cifar10 ----------------------------------------------------------------------------


CIFAR10_FOLDER = "cifar-10-batches-py"  # torchvision's extracted layout under the root


def cifar10_dir(cfg: DataConfig) -> Path:
    """Where CIFAR-10 lives: ``--data-dir`` or ``$XDG_CACHE_HOME/tlx/cifar10``."""
    if cfg.data_dir:
        root = Path(cfg.data_dir).expanduser()
        # Pointing at the extracted folder itself is a common slip; torchvision wants its parent.
        if root.name == CIFAR10_FOLDER and (root / "batches.meta").is_file():
            return root.parent
        return root
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tlx" / "cifar10"


def _cifar10_split(root: Path, *, train: bool) -> Any:
    from torchvision.datasets import CIFAR10

    try:
        # Already extracted: no network access at all.
        return CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        pass
    try:
        root.mkdir(parents=True, exist_ok=True)
        return CIFAR10(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        why = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        if (root / CIFAR10_FOLDER).is_dir():
            # Present but failing torchvision's MD5 checks: say so, not "missing".
            raise EnvironmentUnavailable(
                f"CIFAR-10 in {root / CIFAR10_FOLDER} is incomplete or corrupt (checksum "
                f"mismatch) and re-downloading failed ({why}). Replace that folder with a "
                "fresh extract of cifar-10-python.tar.gz, or use --data synthetic."
            ) from exc
        raise EnvironmentUnavailable(
            f"CIFAR-10 is not in {root} and the download failed ({why}). Connect to the "
            f"internet once, put the extracted {CIFAR10_FOLDER} folder there (or pass "
            "--data-dir), or use --data synthetic."
        ) from exc

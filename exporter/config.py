"""Frozen dataclasses for each command's settings: the single source of defaults.

The CLI reads its option defaults from here; the library takes these objects. Each
command owns one section below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_ARTIFACTS_DIR = "artifacts"


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(cfg).items()}


# --- train ------------------------------------------------------------------------------

DATA_SOURCES = ("synthetic", "cifar10", "imagefolder")
SYNTHETIC_TRAIN_SIZE = 2000
SYNTHETIC_VAL_SIZE = 500


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (``train.json["config"]["data"]``).

    ``train_size``/``val_size`` size the synthetic dataset; for cifar10/imagefolder they are
    ignored (the whole split is used).
    """

    source: str = "cifar10"
    data_dir: str | None = None
    seed: int = 0
    train_size: int = SYNTHETIC_TRAIN_SIZE
    val_size: int = SYNTHETIC_VAL_SIZE
    image_size: int = 224
    augment: bool = True
    strict: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Rebuild from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``tlx train``; defaults here are the CLI's defaults."""

    data: DataConfig = field(default_factory=DataConfig)
    weights: str = "imagenet"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) | "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    grad_clip: float | None = None
    unfreeze_at: int | None = None  # 1-based epoch that starts phase 2
    unfreeze_from: str = "1"  # "features.N" or a number of conv blocks from the top
    backbone_lr_mult: float = 0.1
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # only on CUDA; CPU always trains in fp32
    channels_last: bool = True  # only on CUDA
    compile: bool = False
    cache_features: str = "auto"  # "auto" | "on" | "off"
    workers: int | None = None  # None: 0 on CPU, min(8, cpu_count) on CUDA
    seed: int = 0
    deterministic: bool = False
    patience: int | None = None  # early stopping: epochs without val improvement
    save_every: int = 1  # checkpoint every N epochs (always at the end and on a signal)
    out: str | None = None  # default artifacts/<dataset>-<UTC time>
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from a dict (e.g. a checkpoint's), ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["data"] = DataConfig.from_dict(dict(d.get("data") or {}))
        return cls(**kw)


# --- export -----------------------------------------------------------------------------

# --- verify -----------------------------------------------------------------------------

# --- bench ------------------------------------------------------------------------------

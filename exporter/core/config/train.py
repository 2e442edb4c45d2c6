"""Settings of ``tlx train``: the data (``DataConfig``) and the training run (``TrainConfig``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DATA_SOURCES = ("synthetic", "cifar10", "imagefolder")
AUGMENT_MODES = ("auto", "on", "off")
# Below this input side, `--augment auto` trains on un-augmented images: on a real pretrained
# trunk at 32 px, reflect-padded random crop + flip took a 3-epoch head from 0.45 to 0.24
# (benchmarks/RESULTS.md, "Real transfer"); a 4 px shift of a 32 px image moves the object by
# an eighth of its width, and the frozen trunk cannot learn to ignore it.
AUGMENT_MIN_SIZE = 64
# --image-size bounds. Below 32 px VGG16's five 2×2 pools leave no pixel. Above 1024 px
# (4.6× the 224 px its ImageNet weights were trained at) one image needs ~0.8 GiB of
# activations to run and ~2.2 GiB to train on, so batches no longer fit common machines
# (core/resources.py has the arithmetic).
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
SYNTHETIC_TRAIN_SIZE = 2000
SYNTHETIC_VAL_SIZE = 500


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (``train.json["config"]["data"]``).

    ``train_size``/``val_size`` size the synthetic dataset; for cifar10/imagefolder they are
    ignored. ``limit_train``/``limit_val`` (any source) keep a seeded random subset of a split,
    e.g. a few thousand CIFAR-10 images for a CPU run; ``None`` uses the whole split.
    """

    source: str = "cifar10"
    data_dir: str | None = None
    seed: int = 0
    train_size: int = SYNTHETIC_TRAIN_SIZE
    val_size: int = SYNTHETIC_VAL_SIZE
    image_size: int = 224
    augment: str = "auto"  # "auto" | "on" | "off"; auto: on from AUGMENT_MIN_SIZE px up
    strict: bool = False
    limit_train: int | None = None
    limit_val: int | None = None

    def __post_init__(self) -> None:
        # Older train.json files and API callers say augment=True/False.
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", "on" if self.augment else "off")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Rebuild from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECIPES = ("head", "finetune")
LR_AUTO = "auto"
# Linear warm-up at the start of each phase, as a fraction of that phase's steps (at least one
# step): relative, so a 48-step run and a 5,000-step run both warm up for 10% of their steps.
DEFAULT_WARMUP_FRACTION = 0.1
# `--recipe finetune` without --freeze-epochs: this share of the epochs trains the head alone
# (at least 1, leaving at least 1 for the unfrozen phase), e.g. 2 of 5, 4 of 10.
FINETUNE_HEAD_SHARE = 0.4


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``tlx train``; defaults here are the CLI's defaults.

    The defaults were chosen on real transfer tasks (pretrained trunk, new classes; see
    benchmarks/RESULTS.md, "Real transfer"): AdamW at 1e-3, a warm-up of 10% of the steps then
    cosine decay, no augmentation below 64 px. ``lr`` may be ``"auto"``: an LR range test on the
    head picks it. ``recipe="finetune"`` trains the head for ``freeze_epochs`` epochs, then
    unfreezes the top ``unfreeze_from`` conv blocks at ``lr × backbone_lr_mult`` with a fresh
    warm-up (fastai's ``fine_tune``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    weights: str = "imagenet"
    recipe: str = "head"  # "head" | "finetune"
    epochs: int = 10
    batch_size: int = 64
    lr: float | str = 1e-3  # a peak LR, or "auto" (LR range test)
    optimizer: str = "adamw"  # "adamw" | "sgd" (momentum 0.9)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float | None = None  # None: DEFAULT_WARMUP_FRACTION of each phase
    grad_clip: float | None = None
    freeze_epochs: int | None = None  # finetune: head-only epochs (None: FINETUNE_HEAD_SHARE)
    unfreeze_at: int | None = None  # 1-based epoch that starts phase 2 (any recipe)
    unfreeze_from: str = "2"  # "features.N" or a number of conv blocks from the top
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

"""Settings of ``tlx train``: the data (``DataConfig``) and the training run (``TrainConfig``).

Both check their own values on construction (also when rebuilt from a run's ``train.json``);
whether the data is there (an image folder's layout) is checked when training starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from exporter.core.choices import AUTO, AUTO_ON_OFF, TRAIN_DEVICES
from exporter.core.errors import UsageError
from exporter.core.resources import check_image_size

DATA_SOURCES = ("synthetic", "cifar10", "imagefolder")
AUGMENT_MODES = AUTO_ON_OFF
# Below this input side, `--augment auto` trains on un-augmented images: on a real pretrained
# trunk at 32 px, reflect-padded random crop + flip took a 3-epoch head from 0.45 to 0.24
# (benchmarks/RESULTS.md, "Real transfer"); a 4 px shift of a 32 px image moves the object by
# an eighth of its width, and the frozen trunk cannot learn to ignore it.
AUGMENT_MIN_SIZE = 64
SYNTHETIC_TRAIN_SIZE = 2000
SYNTHETIC_VAL_SIZE = 500
# The synthetic dataset's classes (exporter.data.synthetic, which core cannot import; a test
# checks that the two agree). Labels are cycled over them, so --train-size below this leaves
# classes never seen in training: refused, as an image folder with an empty class is.
SYNTHETIC_CLASSES = 10


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
        if self.source not in DATA_SOURCES:
            raise UsageError(f"--data {self.source!r}: expected one of {', '.join(DATA_SOURCES)}")
        check_image_size(self.image_size)
        if self.source == "synthetic" and (self.train_size < 1 or self.val_size < 1):
            raise UsageError(
                f"--train-size and --val-size must be >= 1, got {self.train_size} / {self.val_size}"
            )
        if self.source == "synthetic" and self.train_size < SYNTHETIC_CLASSES:
            raise UsageError(
                f"--train-size {self.train_size}: the synthetic data has {SYNTHETIC_CLASSES} "
                f"classes, so give at least {SYNTHETIC_CLASSES} training images (one per class; "
                "an image folder needs a training image in every class too)"
            )
        for name, limit in (("--limit-train", self.limit_train), ("--limit-val", self.limit_val)):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
            ):
                raise UsageError(f"{name} must be a whole number >= 1, got {limit!r}")
        if self.source == "imagefolder" and not self.data_dir:
            raise UsageError(
                "--data imagefolder needs --data-dir PATH (a folder with train/<class>/* and "
                "val/<class>/*)"
            )
        if self.augment not in AUGMENT_MODES:
            raise UsageError(f"--augment must be one of {AUGMENT_MODES}, got {self.augment!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Rebuild from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECIPES = ("head", "finetune")
OPTIMIZERS = ("sgd", "adamw")
CACHE_MODES = AUTO_ON_OFF
LR_AUTO = AUTO  # --lr auto: an LR range test picks it
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

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (_valid_lr(self.lr), f"--lr must be a positive number or 'auto', got {self.lr}"),
            (self.recipe in RECIPES, f"--recipe must be one of {RECIPES}, got {self.recipe!r}"),
            (
                self.recipe != "finetune" or self.epochs >= 2 or self.unfreeze_at is not None,
                "--recipe finetune needs --epochs >= 2 (head epochs, then unfrozen epochs)",
            ),
            (
                self.freeze_epochs is None or 1 <= self.freeze_epochs < self.epochs,
                f"--freeze-epochs must be in 1..{self.epochs - 1} (fewer than --epochs), "
                f"got {self.freeze_epochs}",
            ),
            (
                self.freeze_epochs is None or self.recipe == "finetune",
                "--freeze-epochs applies to --recipe finetune only",
            ),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {OPTIMIZERS}"),
            (
                self.cache_features in CACHE_MODES,
                f"--cache-features must be one of {CACHE_MODES}",
            ),
            (self.device in TRAIN_DEVICES, f"--device must be one of {TRAIN_DEVICES}"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (
                self.warmup_epochs is None or self.warmup_epochs >= 0,
                "--warmup-epochs must be >= 0",
            ),
            (self.grad_clip is None or self.grad_clip > 0, "--grad-clip must be > 0"),
            (self.backbone_lr_mult > 0, "--backbone-lr-mult must be > 0"),
            (self.save_every >= 1, f"--save-every must be >= 1, got {self.save_every}"),
            (self.patience is None or self.patience >= 1, "--patience must be >= 1"),
            (self.workers is None or self.workers >= 0, "--workers must be >= 0"),
            (
                self.unfreeze_at is None or 1 <= self.unfreeze_at <= self.epochs,
                f"--unfreeze-at must be an epoch in 1..{self.epochs}, got {self.unfreeze_at}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        # --unfreeze-from names VGG16's modules or blocks: checked against the model's layout
        # (model/shape.py: parse_unfreeze_from) when training starts, before anything is written.

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


def _valid_lr(lr: float | str) -> bool:
    if lr == LR_AUTO:
        return True
    return isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)


@dataclass(frozen=True)
class LaunchSpec:
    """``tlx train --nproc``: where and how many workers run (torchrun's options of the same
    names; ``train/launch.py`` starts them)."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str = "tlx"
    max_restarts: int = 0

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise UsageError(f"--nproc must be >= 1, got {self.nproc}")
        if self.nnodes < 1:
            raise UsageError(f"--nnodes must be >= 1, got {self.nnodes}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError(
                "--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a host every node can reach, "
                "e.g. the first node's address and a free port such as 29400)"
            )

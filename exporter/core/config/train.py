"""Settings of ``tlx train``: the data (``DataConfig``) and the training run (``TrainConfig``).

Both check their own values on construction (also when rebuilt from a run's ``train.json``);
whether the data is there (an image folder's layout) is checked when training starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from exporter.core.choices import AUTO, AUTO_ON_OFF, TRAIN_DEVICES
from exporter.core.config.common import opt
from exporter.core.errors import UsageError
from exporter.core.resources import check_image_size

DATA_SOURCES = ("synthetic", "cifar10", "imagefolder")
AUGMENT_MODES = AUTO_ON_OFF
# Below this input side, `--augment auto` trains on un-augmented images: on a real pretrained
# trunk at 32 px, reflect-padded random crop + flip took a 3-epoch head from 0.45 to 0.24
# (benchmarks/RESULTS.md, "Real transfer"); a 4 px shift of a 32 px image moves the object by
# an eighth of its width, and the frozen trunk cannot learn to ignore it.
AUGMENT_MIN_SIZE = 64
# The synthetic dataset's classes (exporter.data.synthetic, which core cannot import; a test
# checks that the two agree). Labels are cycled over them, so --train-size below this leaves
# classes never seen in training: refused, as an image folder with an empty class is.
SYNTHETIC_CLASSES = 10


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (``train.json["config"]["data"]``);
    each field's help is its option's (``limit_train``/``limit_val`` None: the whole split)."""

    source: str = opt(
        "cifar10",
        flags=("--data",),
        choices=DATA_SOURCES,
        help="Dataset: synthetic (offline), cifar10, imagefolder.",
    )
    data_dir: str | None = opt(
        None,
        path=True,
        help="imagefolder: folder with train/<class>/* and val/<class>/*; cifar10: where to "
        "keep it (default ~/.cache/tlx/cifar10).",
    )
    seed: int = 0  # tlx train sets it to TrainConfig.seed (--seed)
    train_size: int = opt(2000, help="Synthetic: training images.")
    val_size: int = opt(500, help="Synthetic: validation images.")
    image_size: int = opt(224, help="Model input side (px).")
    augment: str = opt(
        "auto",
        choices=AUGMENT_MODES,
        help=f"Random crop + flip of training images. auto: off below {AUGMENT_MIN_SIZE} px "
        "(it hurt short runs on small images), on from there.",
    )
    strict: bool = opt(
        False, flags=("--strict",), help="Fail on an unreadable image instead of skipping."
    )
    limit_train: int | None = opt(
        None,
        min=1,
        help="Train on a seeded random subset of N images (any --data; e.g. CIFAR-10 on CPU).",
    )
    limit_val: int | None = opt(None, min=1, help="Validate on a seeded random subset of N images.")

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


def parse_lr(text: str) -> float | str:
    """``--lr``: a positive number or ``auto`` (a bad value is exit 2, naming the option)."""
    if text.strip().lower() == LR_AUTO:
        return LR_AUTO
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--lr must be a positive number or 'auto', got {text!r}") from None


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
    weights: str = opt("imagenet", help="imagenet, a local VGG16 .pth/.safetensors, or none.")
    recipe: str = opt(
        "head",
        choices=RECIPES,
        help="head: train the classifier on the frozen trunk (the seed recipe). finetune: head "
        "epochs, then the top --unfreeze-from conv blocks too at lr × --backbone-lr-mult, with "
        "a fresh warm-up.",
    )
    freeze_epochs: int | None = opt(
        None,
        help="finetune: head-only epochs before unfreezing.",
        show_default=f"{FINETUNE_HEAD_SHARE:.0%} of --epochs",
    )
    epochs: int = opt(10, help="Epochs to train.")
    batch_size: int = opt(
        64,
        help="Images per optimizer step over all processes (the global batch; each of N "
        "processes takes 1/N of it). The LR is not rescaled.",
    )
    lr: float | str = opt(
        1e-3,
        parse=parse_lr,
        help="Peak learning rate of the head, or 'auto': an LR range test on the head picks it "
        "(curve in lr_find.png).",
    )
    optimizer: str = opt("adamw", choices=OPTIMIZERS, help="sgd (with --momentum) or adamw.")
    momentum: float = opt(0.9, help="Momentum of sgd (adamw does not use it).")
    weight_decay: float = opt(5e-4, help="Weight decay.")
    label_smoothing: float = opt(0.0, help="Label smoothing of the loss.")
    warmup_epochs: float | None = opt(
        None,
        help="Linear LR warm-up before the cosine decay, in epochs.",
        show_default=f"{DEFAULT_WARMUP_FRACTION:.0%} of each phase's steps",
    )
    grad_clip: float | None = opt(None, help="Clip the gradient norm to this value.")
    unfreeze_at: int | None = opt(
        None, help="Epoch (1-based) at which phase 2 unfreezes the trunk."
    )
    unfreeze_from: str = opt("2", help="What to unfreeze: 'features.N' or a number of conv blocks.")
    backbone_lr_mult: float = opt(0.1, help="LR multiplier of the unfrozen trunk.")
    cache_features: str = opt(
        "auto",
        choices=CACHE_MODES,
        help="Run the frozen trunk once and train the head on its outputs: auto = when the "
        "trunk is frozen and augmentation is off.",
    )
    device: str = opt(
        "auto",
        choices=TRAIN_DEVICES,
        help="auto picks CUDA when present (with --resume: the run's own unless given).",
    )
    amp: bool = opt(True, flags=("--amp/--no-amp",), help="Mixed precision on CUDA (bf16 or fp16).")
    channels_last: bool = True  # only on CUDA
    compile: bool = opt(
        False, flags=("--compile",), help="torch.compile the model (uncached steps)."
    )
    workers: int | None = opt(None, help="DataLoader workers.", show_default="0 CPU, 8 CUDA")
    seed: int = opt(0, help="Random seed (data and training).")
    deterministic: bool = opt(
        False, flags=("--deterministic",), help="Deterministic algorithms (slower on GPU)."
    )
    patience: int | None = opt(None, help="Early stop after N epochs without gain.")
    save_every: int = opt(1, help="Checkpoint every N epochs.")
    out: str | None = opt(
        None, path=True, help="Run folder.", show_default="artifacts/<dataset>-<UTC time>"
    )

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
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
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
        return asdict(self)

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

    nproc: int = opt(
        1,
        help="Train on N processes on this node through torchrun (one per GPU, or CPU processes "
        "with gloo); --batch-size stays the global batch.",
    )
    nnodes: int = opt(1, help="Nodes in the job (with --nproc; same command on each).")
    rdzv_endpoint: str | None = opt(None, help="HOST:PORT every node can reach (--nnodes > 1).")
    rdzv_id: str = opt("tlx", help="Job id shared by the nodes of one job.")
    max_restarts: int = opt(
        0,
        help="Restart all processes up to N times after a failure; each restart resumes from "
        "the last checkpoint.",
    )

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

"""``tlx train``: parse options → TrainConfig → :func:`exporter.train.fit` → table and report."""

from __future__ import annotations

import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from exporter.cli.app import (
    NO_WAIT_HELP,
    app,
    cli_errors,
    console,
    err_console,
    is_interactive,
    run_lock_policy,
)
from exporter.core.config import AUGMENT_MIN_SIZE, LR_AUTO, DataConfig, TrainConfig

_D, _T = DataConfig(), TrainConfig()


class DataSource(str, Enum):
    synthetic = "synthetic"
    cifar10 = "cifar10"
    imagefolder = "imagefolder"


class RecipeName(str, Enum):
    head = "head"
    finetune = "finetune"


class AugmentMode(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class OptimizerName(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class CacheMode(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class DeviceName(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command("train")
def train_command(
    data: Annotated[
        DataSource,
        typer.Option("--data", help="Dataset: synthetic (offline), cifar10, imagefolder."),
    ] = DataSource(_D.source),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="imagefolder: folder with train/<class>/* and val/<class>/*; cifar10: where "
            "to keep it (default ~/.cache/tlx/cifar10).",
        ),
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Model input side (px).")] = (
        _D.image_size
    ),
    weights: Annotated[
        str, typer.Option("--weights", help="imagenet, a local VGG16 .pth/.safetensors, or none.")
    ] = _T.weights,
    recipe: Annotated[
        RecipeName,
        typer.Option(
            "--recipe",
            help="head: train the classifier on the frozen trunk (the seed recipe). finetune: "
            "head epochs, then the top --unfreeze-from conv blocks too at lr × "
            "--backbone-lr-mult, with a fresh warm-up.",
        ),
    ] = RecipeName(_T.recipe),
    freeze_epochs: Annotated[
        int | None,
        typer.Option(
            "--freeze-epochs",
            help="finetune: head-only epochs before unfreezing [default: 40% of --epochs].",
        ),
    ] = _T.freeze_epochs,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help=f"Epochs to train [default: {_T.epochs}].")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = (
        _T.batch_size
    ),
    lr: Annotated[
        str,
        typer.Option(
            "--lr",
            help="Peak learning rate of the head, or 'auto': an LR range test on the head picks "
            "it (curve in lr_find.png).",
        ),
    ] = str(_T.lr),
    optimizer: Annotated[
        OptimizerName, typer.Option("--optimizer", help="sgd (momentum 0.9) or adamw.")
    ] = OptimizerName(_T.optimizer),
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Weight decay.")] = (
        _T.weight_decay
    ),
    label_smoothing: Annotated[
        float, typer.Option("--label-smoothing", help="Label smoothing of the loss.")
    ] = _T.label_smoothing,
    warmup_epochs: Annotated[
        float | None,
        typer.Option(
            "--warmup-epochs",
            help="Linear LR warm-up before the cosine decay, in epochs [default: 10% of each "
            "phase's steps].",
        ),
    ] = _T.warmup_epochs,
    grad_clip: Annotated[
        float | None, typer.Option("--grad-clip", help="Clip the gradient norm to this value.")
    ] = _T.grad_clip,
    unfreeze_at: Annotated[
        int | None,
        typer.Option("--unfreeze-at", help="Epoch (1-based) at which phase 2 unfreezes the trunk."),
    ] = _T.unfreeze_at,
    unfreeze_from: Annotated[
        str,
        typer.Option(
            "--unfreeze-from", help="What to unfreeze: 'features.N' or a number of conv blocks."
        ),
    ] = _T.unfreeze_from,
    backbone_lr_mult: Annotated[
        float, typer.Option("--backbone-lr-mult", help="LR multiplier of the unfrozen trunk.")
    ] = _T.backbone_lr_mult,
    augment: Annotated[
        AugmentMode,
        typer.Option(
            "--augment",
            help=f"Random crop + flip of training images. auto: off below {AUGMENT_MIN_SIZE} px "
            "(it hurt short runs on small images), on from there.",
        ),
    ] = AugmentMode(_D.augment),
    no_augment: Annotated[
        bool, typer.Option("--no-augment", help="Same as --augment off (enables the cache).")
    ] = False,
    cache_features: Annotated[
        CacheMode,
        typer.Option(
            "--cache-features",
            help="Run the frozen trunk once and train the head on its outputs: auto = when "
            "the trunk is frozen and augmentation is off.",
        ),
    ] = CacheMode(_T.cache_features),
    device: Annotated[
        DeviceName | None,
        typer.Option(
            "--device",
            help=f"auto picks CUDA when present [default: {_T.device}; with --resume: the "
            "run's own unless given].",
        ),
    ] = None,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 or fp16).")
    ] = _T.amp,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (uncached steps).")
    ] = _T.compile,
    workers: Annotated[
        int | None, typer.Option("--workers", help="DataLoader workers [default: 0 CPU, 8 CUDA].")
    ] = _T.workers,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder [default: artifacts/<dataset>-<UTC time>]."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue RUN from its checkpoint/ (other options are ignored "
            "except --epochs, --device, --quiet).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (data and training).")] = (
        _T.seed
    ),
    deterministic: Annotated[
        bool, typer.Option("--deterministic", help="Deterministic algorithms (slower on GPU).")
    ] = _T.deterministic,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Early stop after N epochs without gain.")
    ] = _T.patience,
    save_every: Annotated[
        int, typer.Option("--save-every", help="Checkpoint every N epochs.")
    ] = _T.save_every,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on an unreadable image instead of skipping.")
    ] = _D.strict,
    train_size: Annotated[
        int, typer.Option("--train-size", help="Synthetic: training images.")
    ] = _D.train_size,
    val_size: Annotated[int, typer.Option("--val-size", help="Synthetic: validation images.")] = (
        _D.val_size
    ),
    limit_train: Annotated[
        int | None,
        typer.Option(
            "--limit-train",
            min=1,
            help="Train on a seeded random subset of N images (any --data; e.g. CIFAR-10 on CPU).",
        ),
    ] = _D.limit_train,
    limit_val: Annotated[
        int | None,
        typer.Option("--limit-val", min=1, help="Validate on a seeded random subset of N images."),
    ] = _D.limit_val,
    no_wait: Annotated[bool, typer.Option("--no-wait", help=NO_WAIT_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train VGG16's head (and optionally the top of the trunk) and write a run folder."""
    with cli_errors(), run_lock_policy(no_wait):
        from dataclasses import replace

        from exporter.train import fit, resume_config

        if resume is not None:
            cfg = resume_config(resume)
            if epochs is not None:
                cfg = replace(cfg, epochs=epochs)
            if device is not None:  # e.g. a CPU run continued on a GPU, or the reverse
                cfg = replace(cfg, device=device.value)
        else:
            cfg = TrainConfig(
                data=DataConfig(
                    source=data.value,
                    data_dir=str(data_dir) if data_dir is not None else None,
                    seed=seed,
                    train_size=train_size,
                    val_size=val_size,
                    image_size=image_size,
                    augment="off" if no_augment else augment.value,
                    strict=strict,
                    limit_train=limit_train,
                    limit_val=limit_val,
                ),
                weights=weights,
                epochs=epochs if epochs is not None else _T.epochs,
                batch_size=batch_size,
                lr=_parse_lr(lr),
                recipe=recipe.value,
                freeze_epochs=freeze_epochs,
                optimizer=optimizer.value,
                weight_decay=weight_decay,
                label_smoothing=label_smoothing,
                warmup_epochs=warmup_epochs,
                grad_clip=grad_clip,
                unfreeze_at=unfreeze_at,
                unfreeze_from=unfreeze_from,
                backbone_lr_mult=backbone_lr_mult,
                device=(device or DeviceName(_T.device)).value,
                amp=amp,
                compile=compile_model,
                cache_features=cache_features.value,
                workers=workers,
                seed=seed,
                deterministic=deterministic,
                patience=patience,
                save_every=save_every,
                out=str(out) if out is not None else None,
                quiet=quiet,
            )
        view = _Progress(enabled=not quiet and is_interactive())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                view.preparing()
                result = fit(cfg, progress=view, resume=resume is not None)
            finally:
                view.close()
                for w in caught:  # skipped images: one line each, on stderr
                    err_console.print(f"warning: {w.message}", markup=False, soft_wrap=True)
        console.print(summary_table(result.record))
        finder = result.record.get("lr_finder")
        if finder:
            console.print(
                f"--lr auto: the range test chose {finder['chosen_lr']:.2e} "
                f"({finder['seconds']:.1f} s; curve in lr_find.png)",
                markup=False,
            )
        best = result.record["best"]
        console.print(
            f"best epoch {best['epoch']}: val accuracy {_fmt(best['val_accuracy'])}; "
            f"run folder {result.run_dir}",
            markup=False,
        )


def _parse_lr(text: str) -> float | str:
    """``--lr``: a positive number or ``auto`` (a bad value is exit 2, naming the option)."""
    if text.strip().lower() == LR_AUTO:
        return LR_AUTO
    try:
        return float(text)
    except ValueError:
        from exporter.core.errors import UsageError

        raise UsageError(f"--lr must be a positive number or 'auto', got {text!r}") from None


class _Progress:
    """Renders TrainEvents: a rich bar per epoch on a TTY, plain log lines otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def preparing(self) -> None:
        """Until the first event: building the datasets (an image folder is fully decoded
        once to find bad files) and the model can take minutes, so show that something runs."""
        if self.enabled:
            self._start_bar("loading data and model", None)

    def __call__(self, ev: Any) -> None:
        if ev.kind == "start":
            self._stop_bar()
            # Always logged: scripts (and tests) wait for it before sending signals.
            err_console.print(
                f"training: {ev.info['run_dir']} on {ev.info['device']}, {ev.epochs} epochs of "
                f"{ev.steps} steps",
                markup=False,
            )
            return
        if ev.kind == "epoch":
            self._stop_bar()
            m = ev.metrics
            err_console.print(
                f"epoch {m['epoch']}/{ev.epochs}: train loss {_fmt(m['train_loss'])} acc "
                f"{m['train_accuracy']:.3f} | val loss {_fmt(m['val_loss'])} acc "
                f"{m['val_accuracy']:.3f} | {m['images_per_s']:.1f} img/s {m['seconds']:.1f} s"
                + (" (feature cache)" if m.get("feature_cache") else ""),
                markup=False,
            )
            return
        if ev.kind == "lr_find":
            if self.enabled:
                self._start_bar("LR range test", None)
            return
        if not self.enabled or ev.kind not in ("step", "cache"):
            return
        label = "feature cache" if ev.kind == "cache" else f"epoch {ev.epoch}/{ev.epochs}"
        if self.bar is None or self.bar_label != label:
            self._start_bar(label, ev.steps)
        extra = ""
        if ev.kind == "step":
            extra = f"loss {ev.loss:.4f} acc {ev.accuracy:.3f} {ev.images_per_s:.1f} img/s"
        self.bar.update(self.task, completed=ev.step, extra=extra)

    def _start_bar(self, label: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._stop_bar()
        # No total (setup): a spinner and the elapsed time; otherwise a bar with N/M and ETA.
        columns = (
            (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            if total is None
            else (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
            )
        )
        self.bar = Progress(*columns, console=err_console, transient=True)
        self.bar.start()
        self.bar_label = label
        self.task = self.bar.add_task(label, total=total, extra="")

    def _stop_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def close(self) -> None:
        self._stop_bar()


def summary_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"tlx train: {record['dataset']['name']} ({record['status']})")
    for col in (
        "epoch",
        "phase",
        "lr",
        "train loss",
        "train acc",
        "val loss",
        "val acc",
        "img/s",
        "s",
    ):
        table.add_column(col, justify="right")
    best = record["best"]["epoch"]
    for e in record["epochs"]:
        mark = " *" if e["epoch"] == best else ""
        table.add_row(
            f"{e['epoch']}{mark}",
            str(e["phase"]),
            f"{e['lr']:.2e}",
            _fmt(e["train_loss"]),
            f"{e['train_accuracy']:.3f}",
            _fmt(e["val_loss"]),
            f"{e['val_accuracy']:.3f}",
            f"{e['images_per_s']:.1f}",
            f"{e['seconds']:.1f}",
        )
    return table


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"

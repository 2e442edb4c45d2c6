"""``tlx train``: parse options → TrainConfig → :func:`exporter.train.fit` → table and report.

With ``--nproc``/``--nnodes`` this process launches the same command on every worker through
torchrun instead (``exporter/train/launch.py``); ``torchrun ... -m exporter train ...``
reaches the plain path directly, once per worker.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from exporter.cli.app import (
    NO_WAIT_HELP,
    app,
    choice_enum,
    cli_errors,
    console,
    debug_enabled,
    err_console,
    is_interactive,
    run_lock_policy,
)
from exporter.cli.train_options import resolve_config, worker_args
from exporter.cli.train_view import TrainProgress, fmt, summary_table
from exporter.core.choices import TRAIN_DEVICES
from exporter.core.config import (
    AUGMENT_MIN_SIZE,
    AUGMENT_MODES,
    CACHE_MODES,
    DATA_SOURCES,
    OPTIMIZERS,
    RECIPES,
    DataConfig,
    LaunchSpec,
    TrainConfig,
)

_D, _T, _L = DataConfig(), TrainConfig(), LaunchSpec()


DataSource = choice_enum("DataSource", DATA_SOURCES)
RecipeName = choice_enum("RecipeName", RECIPES)
AugmentMode = choice_enum("AugmentMode", AUGMENT_MODES)
OptimizerName = choice_enum("OptimizerName", OPTIMIZERS)
CacheMode = choice_enum("CacheMode", CACHE_MODES)
DeviceName = choice_enum("DeviceName", TRAIN_DEVICES)


@app.command("train")
def train_command(
    ctx: typer.Context,
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
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help="Images per optimizer step over all processes (the global batch; each of N "
            "processes takes 1/N of it). The LR is not rescaled.",
        ),
    ] = _T.batch_size,
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
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Train on N processes on this node through torchrun (one per GPU, or CPU "
            "processes with gloo); --batch-size stays the global batch.",
        ),
    ] = None,
    nnodes: Annotated[
        int, typer.Option("--nnodes", help="Nodes in the job (with --nproc; same command on each).")
    ] = _L.nnodes,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option("--rdzv-endpoint", help="HOST:PORT every node can reach (--nnodes > 1)."),
    ] = _L.rdzv_endpoint,
    rdzv_id: Annotated[
        str, typer.Option("--rdzv-id", help="Job id shared by the nodes of one job.")
    ] = _L.rdzv_id,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            help="Restart all processes up to N times after a failure; each restart resumes "
            "from the last checkpoint.",
        ),
    ] = _L.max_restarts,
) -> None:
    """Train VGG16's head (and optionally the top of the trunk) and write a run folder."""
    with cli_errors(), _worker_errors(), run_lock_policy(no_wait):
        if any(_given(ctx, name) for name in LAUNCHER_PARAMS):
            _launch(ctx)
            return
        cfg, resuming = resolve_config(ctx.params)
        _train_and_report(cfg, resume=resuming, quiet=quiet)


LAUNCHER_PARAMS = ("nproc", "nnodes", "rdzv_endpoint", "rdzv_id", "max_restarts")


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def _rank() -> tuple[int, int]:
    """(global rank, local rank) under torchrun; (0, 0) otherwise."""
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("LOCAL_RANK", "0") or 0)


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """Under torchrun every rank hits the same bad option or signal: only each node's first
    rank says so (its exit status is the same everywhere)."""
    from exporter.core.errors import GateFailed, Interrupted, UsageError

    try:
        yield
    except (UsageError, GateFailed, Interrupted) as exc:
        if _rank()[1] != 0 and not debug_enabled():
            raise typer.Exit(exc.exit_code) from None
        raise


def _train_and_report(cfg: TrainConfig, *, resume: bool, quiet: bool) -> None:
    from exporter.train import fit

    main = _rank()[0] == 0
    view = TrainProgress(enabled=not quiet and is_interactive() and main)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            view.preparing()
            result = fit(cfg, progress=view, resume=resume)
        finally:
            view.close()
            for w in caught if main else ():  # skipped images: one line each, on stderr
                err_console.print(f"warning: {w.message}", markup=False, soft_wrap=True)
    if not main:
        return
    console.print(summary_table(result.record))
    finder = result.record.get("lr_finder")
    if finder and finder.get("stopped") != "skipped":  # skipped: the warning says why
        console.print(
            f"--lr auto: the range test chose {finder['chosen_lr']:.2e} "
            f"({finder['seconds']:.1f} s; curve in lr_find.png)",
            markup=False,
        )
        if finder.get("warning"):
            err_console.print(f"warning: --lr auto: {finder['warning']}", markup=False)
    best = result.record["best"]
    console.print(
        f"best epoch {best['epoch']}: val accuracy {fmt(best['val_accuracy'])}; "
        f"run folder {result.run_dir}",
        markup=False,
    )


def _launch(ctx: typer.Context) -> None:
    """``--nproc``/``--nnodes``: the same command on every worker, through torchrun."""
    from exporter.core.errors import UsageError
    from exporter.train.common import default_run_dir
    from exporter.train.launch import WorkerFailed, launch
    from exporter.train.train import check_launch_resources

    if "TORCHELASTIC_RUN_ID" in os.environ:
        raise UsageError("--nproc/--nnodes launch torchrun; under torchrun already, drop them")
    p = ctx.params
    nproc = _L.nproc if p["nproc"] is None else p["nproc"]
    spec = LaunchSpec(nproc, p["nnodes"], p["rdzv_endpoint"], p["rdzv_id"], p["max_restarts"])
    world = spec.nproc * spec.nnodes
    batch = ctx.params["batch_size"]
    if ctx.params["resume"] is None and batch % world:
        raise UsageError(
            f"--batch-size {batch} is the global batch and must divide by the number of "
            f"processes ({world} = --nproc {spec.nproc} x --nnodes {spec.nnodes})"
        )
    # The workers of this machine share its memory: checked together, before any starts.
    check_launch_resources(resolve_config(p)[0], nproc=spec.nproc, world_size=world)
    args = worker_args(ctx, skip=LAUNCHER_PARAMS)
    if ctx.params["out"] is None and ctx.params["resume"] is None:
        # Every worker must write to one folder: name it here, not once per process.
        args += ["--out", str(default_run_dir(ctx.params["data"].value))]
    try:
        launch(spec, args)
    except WorkerFailed as exc:  # the worker printed its reason; keep its exit status
        raise typer.Exit(exc.exit_code) from None

"""From ``tlx train``'s parsed options to a TrainConfig, or back to a command line (workers)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from exporter.core.config import LR_AUTO, DataConfig, TrainConfig

__all__ = ["new_config", "resolve_config", "worker_args"]

_T = TrainConfig()


def new_config(p: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a new run from the parsed options."""
    seed = p["seed"]
    data = DataConfig(
        source=_value(p["data"]),
        data_dir=str(p["data_dir"]) if p["data_dir"] is not None else None,
        seed=seed,
        train_size=p["train_size"],
        val_size=p["val_size"],
        image_size=p["image_size"],
        augment="off" if p["no_augment"] else _value(p["augment"]),
        strict=p["strict"],
        limit_train=p["limit_train"],
        limit_val=p["limit_val"],
    )
    plain = ("weights", "batch_size", "freeze_epochs", "weight_decay", "label_smoothing")
    plain += ("warmup_epochs", "grad_clip", "unfreeze_at", "unfreeze_from", "backbone_lr_mult")
    plain += ("amp", "workers", "seed", "deterministic", "patience", "save_every", "quiet")
    return TrainConfig(
        data=data,
        epochs=p["epochs"] if p["epochs"] is not None else _T.epochs,
        lr=_parse_lr(p["lr"]),
        recipe=_value(p["recipe"]),
        optimizer=_value(p["optimizer"]),
        device=_value(p["device"]) if p["device"] is not None else _T.device,
        compile=p["compile_model"],
        cache_features=_value(p["cache_features"]),
        out=str(p["out"]) if p["out"] is not None else None,
        **{k: p[k] for k in plain},
    )


def resolve_config(p: dict[str, Any]) -> tuple[TrainConfig, bool]:
    """(config, resume?): a new run, ``--resume RUN``, or a torchrun restart of a run."""
    from dataclasses import replace

    from exporter.train import resume_config
    from exporter.train.checkpoint import STATE_NAME, checkpoint_dir
    from exporter.train.distributed import restart_count

    run = p["resume"]
    # torchrun restarted the workers after a failure (--max-restarts): the same command line
    # comes back, and continues from the last checkpoint if there is one.
    restarted = run is None and restart_count() > 0 and p["out"] is not None
    if restarted and (checkpoint_dir(Path(p["out"])) / STATE_NAME).is_file():
        run = p["out"]
    if run is None:
        return new_config(p), False
    cfg = resume_config(run)
    if p["epochs"] is not None:
        cfg = replace(cfg, epochs=p["epochs"])
    if p["device"] is not None:  # e.g. a CPU run continued on a GPU, or the reverse
        cfg = replace(cfg, device=_value(p["device"]))
    return cfg, True


def worker_args(ctx: typer.Context, *, skip: tuple[str, ...]) -> list[str]:
    """The options given on this command line (not defaults), as a command line again."""
    out: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        if name in skip or getattr(param, "param_type_name", "") != "option":
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name == "DEFAULT":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):
            opts = param.opts if value else getattr(param, "secondary_opts", [])
            out += opts[:1]
        elif value is not None:
            out += [param.opts[0], str(_value(value))]
    return out


def _value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def _parse_lr(text: str) -> float | str:
    """``--lr``: a positive number or ``auto`` (a bad value is exit 2, naming the option)."""
    if text.strip().lower() == LR_AUTO:
        return LR_AUTO
    try:
        return float(text)
    except ValueError:
        from exporter.core.errors import UsageError

        raise UsageError(f"--lr must be a positive number or 'auto', got {text!r}") from None

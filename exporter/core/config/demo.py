"""Settings of ``tlx demo``."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import ALL
from exporter.core.config.common import opt
from exporter.core.config.export import EXPORT_FORMATS


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``tlx demo``: train → export → verify → bench, offline, in minutes on a CPU.

    ``train_size``/``val_size`` size the synthetic data; ``batch_sizes``, ``warmup`` and
    ``iters`` are bench's (per cell); ``seed`` seeds data, init and bench inputs; ``runtimes``
    are verified and benched (``all``: whatever runs here).

    Attributes:
        image_size: input size; 32 px keeps the whole demo under three minutes on 2 cores.
        epochs: training epochs of the head (on cached trunk features: cheap at 32 px); every
            other training setting is ``tlx train``'s default. 9: validation reached 100% at
            epoch 8 (12 reached it at 7 but cost ~7 s more of a 150 s budget).
        variants: ``tlx optimize`` variants built after export (empty: none). ``fold`` and
            ``fold-int8`` (the fastest CPU artifact): plain ``int8`` added ~25 s of optimize
            and verify and took the demo past 3 minutes on 2 cores (185 s measured).
        verify_samples: held-out images verify compares on (at most ``val_size``): 256, so
            that one int8 disagreement (0.39 points) stays inside the int8 profile.
    """

    out_dir: str | None = opt(
        None,
        flags=("--out",),
        path=True,
        help="Run folder to create (default: artifacts/demo-<UTC time>).",
    )
    weights: str = opt(
        "none",
        help="'none' (random init, offline) or a local torchvision VGG16 state dict "
        "(.pth/.safetensors) to start from.",
    )
    image_size: int = 32
    train_size: int = 400
    val_size: int = 256
    epochs: int = 9
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 1
    iters: int = 8
    seed: int = 0
    formats: tuple[str, ...] = EXPORT_FORMATS
    variants: tuple[str, ...] = ("fold", "fold-int8")
    verify_samples: int = 256
    runtimes: tuple[str, ...] = (ALL,)

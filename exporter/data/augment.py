"""Whether training images are augmented: the one data choice that depends on the run's size.

Resolved from the config here (not in :mod:`exporter.train.recipe`) so that the datasets,
which apply it, do not import the training stage.
"""

from __future__ import annotations

from exporter.core.config import AUGMENT_MIN_SIZE, DataConfig


def resolve_augment(cfg: DataConfig) -> tuple[bool, str]:
    """Whether training images are augmented, and why (recorded in train.json)."""
    if cfg.augment == "on":
        return True, "--augment on"
    if cfg.augment == "off":
        return False, "--augment off"
    if cfg.image_size < AUGMENT_MIN_SIZE:
        return False, f"auto: off below {AUGMENT_MIN_SIZE} px (image size {cfg.image_size})"
    return True, f"auto: on from {AUGMENT_MIN_SIZE} px (image size {cfg.image_size})"

"""Training: :func:`fit` (facade) → loop, recipe, LR finder, feature cache, checkpoints."""

from exporter.train.common import TrainEvent
from exporter.train.recipe import lr_factor
from exporter.train.train import TrainResult, fit, resume_config

__all__ = ["TrainEvent", "TrainResult", "fit", "lr_factor", "resume_config"]

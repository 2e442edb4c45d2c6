"""tlx: turn a pretrained VGG16 into verified, benchmarked production artifacts."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["PredictInputError", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # ``exporter.load`` without importing the serving stack (and numpy, PIL) at package import.
    if name == "load":
        from exporter.serve.predictor import load

        return load
    if name == "PredictInputError":  # what every misuse of a Predictor raises
        from exporter.core.errors import PredictInputError

        return PredictInputError
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")

"""What every command's settings share: the artifacts folder, the batch bound, ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from exporter.core.errors import UsageError

DEFAULT_ARTIFACTS_DIR = "artifacts"
# Largest batch any command accepts: 65,536 images of 224 px are already 39 GB of input.
MAX_BATCH_SIZE = 65536


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(cfg).items()}


def check_int(option: str, value: int, limit: int) -> None:
    """A positive int no larger than ``limit`` (bools are refused too)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise UsageError(f"{option} {value!r}: give an integer from 1 to {limit}")

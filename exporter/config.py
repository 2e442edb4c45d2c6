"""Frozen dataclasses for each command's settings: the single source of defaults.

The CLI reads its option defaults from here; the library takes these objects. Each
command owns one section below.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

DEFAULT_ARTIFACTS_DIR = "artifacts"


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(cfg).items()}


# --- train ------------------------------------------------------------------------------

# --- export -----------------------------------------------------------------------------

# --- verify -----------------------------------------------------------------------------

# --- bench ------------------------------------------------------------------------------

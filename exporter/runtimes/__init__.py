"""Runtimes behind one interface; see :mod:`exporter.runtimes.base`."""

from __future__ import annotations

import importlib

from exporter.runtimes.base import REGISTRY, Artifact, Runtime, get_runtime, register

# One line per runtime module; importing a module registers its runtimes.
_MODULES = ("eager", "torchscript", "pt2", "compile", "ort", "openvino_cpu")


def load_all() -> dict[str, type[Runtime]]:
    """Import every runtime module (cheap: heavy imports happen in ``load``)."""
    for mod in _MODULES:
        importlib.import_module(f"exporter.runtimes.{mod}")
    return REGISTRY


__all__ = ["REGISTRY", "Artifact", "Runtime", "get_runtime", "load_all", "register"]

"""Command-line interface: ``tlx`` (thin: parse → config → one library call → report).

Each command lives in its own module; importing it registers it on :data:`app`. Heavy
imports (torch, onnxruntime) happen inside command bodies so ``tlx --help`` is instant.
"""

from __future__ import annotations

import importlib

from exporter.cli.app import app

# Registration order is the order of `tlx --help`.
_COMMANDS = "inspect train bench export verify optimize demo predict serve loadtest sign tune"
for _mod in _COMMANDS.split():
    importlib.import_module(f"exporter.cli.{_mod}_cmd")

__all__ = ["app"]

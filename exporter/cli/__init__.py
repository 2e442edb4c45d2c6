"""Command-line interface: ``tlx`` (thin: parse → config → one library call → report).

Each command lives in its own module; importing it registers it on :data:`app`. Heavy
imports (torch, onnxruntime) happen inside command bodies so ``tlx --help`` is instant.
"""

from __future__ import annotations

import importlib

from exporter.cli.app import app

for _mod in (
    "inspect_cmd",
    "train_cmd",
    "bench_cmd",
    "export_cmd",
    "verify_cmd",
    "optimize_cmd",
    "demo_cmd",
    "predict_cmd",
    "serve_cmd",
    "loadtest_cmd",
    "sign_cmd",
    "tune_cmd",
):
    importlib.import_module(f"exporter.cli.{_mod}")

__all__ = ["app"]

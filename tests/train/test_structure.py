"""Training is one loop with explicit collaborators: no mixins, one "run exists" check."""

from __future__ import annotations

import ast
from pathlib import Path

import exporter.train

TRAIN = Path(exporter.train.__file__).parent


def test_no_mixin_classes_in_train() -> None:
    # The Trainer once inherited from five mixins sharing ~78 attributes: state now lives in
    # objects passed explicitly, and a class with several bases would bring the sharing back.
    found = []
    for path in sorted(TRAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and (
                "mixin" in node.name.lower() or len(node.bases) > 1
            ):
                found.append(f"{path.name}: {node.name}")
    assert found == []


def test_an_existing_run_is_refused_in_one_place() -> None:
    hits = [p.name for p in TRAIN.glob("*.py") if "already holds a run" in p.read_text()]
    assert hits == ["train.py"]

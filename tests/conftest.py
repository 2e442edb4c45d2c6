"""Shared fixtures: run folders made in the test (no downloads, no real dataset).

``make_run_folder`` writes what ``tlx train`` writes — ``model.safetensors`` and a valid
``train.json`` — from a randomly initialised VGG16, in about a second. Tests that need a
*trained* run call ``exporter.train.fit`` themselves.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SYNTHETIC_CLASSES = [f"class_{i}" for i in range(10)]


def make_run_folder(
    run_dir: Path,
    *,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    train_size: int = 64,
    val_size: int = 32,
) -> Path:
    """Create a minimal, valid run folder with random (seeded) weights."""
    import torch
    from safetensors.torch import save_file

    from exporter.core.preprocess import Preprocessing
    from exporter.model.vgg import build_vgg16

    torch.manual_seed(seed)
    model = build_vgg16(num_classes=num_classes, weights="none").eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(run_dir / "model.safetensors"),
    )
    class_names = (
        SYNTHETIC_CLASSES[:num_classes]
        if num_classes <= 10
        else [f"c{i}" for i in range(num_classes)]
    )
    record = {
        "schema_version": 1,
        "command": "train",
        "config": {
            "data": {
                "source": "synthetic",
                "data_dir": None,
                "seed": seed,
                "train_size": train_size,
                "val_size": val_size,
                "image_size": image_size,
                "augment": False,
                "strict": False,
            },
            "model": {"arch": "vgg16", "weights": "none", "num_classes": num_classes},
        },
        "dataset": {"name": "synthetic", "class_names": class_names, "num_classes": num_classes},
        "preprocessing": Preprocessing(image_size=image_size).to_dict(),
        "epochs": [],
        "best": {"epoch": 0, "val_accuracy": 0.1},
    }
    (run_dir / "train.json").write_text(json.dumps(record, indent=2))
    return run_dir


@pytest.fixture(autouse=True)
def _free_disk_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete a test's tmp_path when it ends: a run folder holds ~1.5 GB of weights and
    checkpoints, and pytest's default keeps three sessions' worth of them on disk."""
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A fresh random-weights run folder at 32 px (function scope: tests may modify it)."""
    return make_run_folder(tmp_path / "run")


@pytest.fixture(scope="session")
def shared_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide run folder at 32 px for read-only use."""
    return make_run_folder(tmp_path_factory.mktemp("shared") / "run")

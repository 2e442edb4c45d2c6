"""The run folder: one run is one folder, the contract between the commands.

``tlx train`` creates it; ``export``, ``verify`` and ``bench`` read it and add to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.core.errors import InputFileError
from exporter.core.preprocess import Preprocessing

WEIGHTS_NAME = "model.safetensors"
TRAIN_JSON = "train.json"
CHECKPOINT_DIR = "checkpoint"
CURVES_PNG = "curves.png"
LR_FIND_PNG = "lr_find.png"


@dataclass(frozen=True)
class RunInfo:
    """What ``train.json`` says about a run, validated."""

    run_dir: Path
    record: dict[str, Any]
    class_names: list[str]
    preprocessing: Preprocessing

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def weights_path(self) -> Path:
        return self.run_dir / WEIGHTS_NAME

    @property
    def data_config(self) -> dict[str, Any]:
        """The data section of the training config (source, folder, seed, sizes)."""
        return dict(self.record.get("config", {}).get("data", {}))

    @property
    def best_val_accuracy(self) -> float | None:
        best = self.record.get("best") or {}
        return best.get("val_accuracy")


def open_run(run_dir: str | Path) -> RunInfo:
    """Validate a run folder made by ``tlx train`` and read its ``train.json``.

    Raises:
        InputFileError: the folder, ``train.json`` or ``model.safetensors`` is missing or bad.
    """
    run = Path(run_dir)
    if not run.exists():
        raise InputFileError(f"run folder {run} does not exist (create one with `tlx train`)")
    if not run.is_dir():
        raise InputFileError(f"{run} is not a folder: pass the run folder made by `tlx train`")
    tj = run / TRAIN_JSON
    if not tj.is_file():
        raise InputFileError(f"{tj} not found: {run} is not a tlx run folder (made by `tlx train`)")
    try:
        record = json.loads(tj.read_text(encoding="utf-8"))
        class_names = [str(c) for c in record["dataset"]["class_names"]]
        if not class_names:
            raise ValueError("no class names")
        pre = Preprocessing.from_dict(record["preprocessing"])
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        raise InputFileError(f"{tj} is malformed: {exc}") from exc
    if not (run / WEIGHTS_NAME).is_file():
        raise InputFileError(f"{run / WEIGHTS_NAME} not found: the run has no trained weights")
    return RunInfo(run, record, class_names, pre)

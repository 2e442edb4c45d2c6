"""A resumed run's training config comes from its checkpoint: a bad one names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.core.config import TrainConfig, to_dict
from exporter.core.errors import InputFileError
from exporter.train import train as train_mod


@pytest.mark.parametrize(
    "edit",
    [{"epochs": 0}, {"optimizer": "rmsprop"}, {"data": {"image_size": 5}}, {"lr": -1.0}],
)
def test_bad_config_in_the_checkpoint_names_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: dict
) -> None:
    config = {**to_dict(TrainConfig()), **edit}
    if "data" in edit:
        config["data"] = {**to_dict(TrainConfig().data), **edit["data"]}
    monkeypatch.setattr(train_mod, "load_checkpoint", lambda _run: {"config": config})
    with pytest.raises(InputFileError, match=r"checkpoint: the checkpoint's training config"):
        train_mod.resume_config(tmp_path)


def test_good_config_resumes_into_the_given_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = to_dict(TrainConfig(epochs=3))
    monkeypatch.setattr(train_mod, "load_checkpoint", lambda _run: {"config": config})
    cfg = train_mod.resume_config(tmp_path)
    assert cfg.epochs == 3 and cfg.out == str(tmp_path)

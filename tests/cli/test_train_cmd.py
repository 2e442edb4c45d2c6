"""``tlx train`` from the command line: exit codes, and a real signal sent to a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from exporter.cli import app
from exporter.train.checkpoint import load_checkpoint

TINY = [
    "train",
    "--data",
    "synthetic",
    "--train-size",
    "16",
    "--val-size",
    "8",
    "--image-size",
    "32",
    "--weights",
    "none",
    "--batch-size",
    "8",
    "--no-augment",
    "--quiet",
]
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--batch-size", "0"], 2, "--batch-size must be >= 1"),
        (["--epochs", "0"], 2, "--epochs must be >= 1"),
        (["--save-every", "0"], 2, "--save-every"),
        (["--unfreeze-at", "1", "--unfreeze-from", "head"], 2, "--unfreeze-from"),
        (["--data", "mnist"], 2, "mnist"),
        (["--device", "cuda"], 3, "CUDA is not available"),
    ],
)
def test_bad_options_exit_codes(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, out = invoke(*TINY, "--out", str(tmp_path / "run"), *args)
    assert rc == code, out
    assert message in out
    assert "Traceback" not in out


def test_missing_data_folder_exits_2(tmp_path: Path) -> None:
    rc, out = invoke(
        *TINY,
        "--data",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "run"),
    )
    assert rc == 2 and "does not exist" in out


def test_empty_imagefolder_exits_2(tmp_path: Path) -> None:
    (tmp_path / "d/train").mkdir(parents=True)
    (tmp_path / "d/val").mkdir()
    rc, out = invoke(
        *TINY,
        "--data",
        "imagefolder",
        "--data-dir",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "run"),
    )
    assert rc == 2 and "no class folders" in out


def test_cifar10_offline_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    rc, out = invoke(
        *TINY,
        "--data",
        "cifar10",
        "--data-dir",
        str(tmp_path / "c"),
        "--out",
        str(tmp_path / "run"),
    )
    assert rc == 3 and "CIFAR-10" in out


def test_resume_of_a_folder_without_checkpoint_exits_2(tmp_path: Path) -> None:
    rc, out = invoke("train", "--resume", str(tmp_path))
    assert rc == 2 and "checkpoint" in out


def _tlx(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow  # three processes of real VGG16 training: ~1-3 min on 2 shared cores
def test_sigterm_saves_checkpoint_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    # 32 images, batch 8: 4 steps per epoch, so the signal lands inside training.
    args = [*TINY, "--train-size", "32", "--epochs", "2"]
    straight = _tlx(*args, "--out", str(tmp_path / "straight"))
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err

    proc = _tlx(*args, "--out", str(tmp_path / "run"))
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "training: ..." is printed once the handlers are in place
    assert line.startswith("training:"), line + proc.stderr.read()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived (very fast machine)")
    assert proc.returncode == 143, err
    assert "SIGTERM received" in err and "--resume" in err and "Traceback" not in err
    rec = json.loads((tmp_path / "run/train.json").read_text())
    assert rec["status"] == "interrupted"

    resumed = _tlx("train", "--resume", str(tmp_path / "run"), "--quiet")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    a = load_checkpoint(tmp_path / "straight")["model"]
    b = load_checkpoint(tmp_path / "run")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rec = json.loads((tmp_path / "run/train.json").read_text())
    assert rec["status"] == "completed" and [e["epoch"] for e in rec["epochs"]] == [1, 2]


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text("{}")
    rc, out = invoke(*TINY, "--out", str(run))
    assert rc == 2 and "already holds a run" in out


def test_train_on_cifar10_from_disk_with_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_fake_cifar10
) -> None:
    # The real CIFAR-10 loader on a tiny torchvision-layout folder (checksums patched), through
    # the CLI: --limit-train/--limit-val reach the data, train.json records them.
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    folder = write_fake_cifar10(tmp_path / "c10", per_batch=6)
    run = tmp_path / "run"
    rc, out = invoke(
        *TINY,
        "--data",
        "cifar10",
        "--data-dir",
        str(folder),
        "--limit-train",
        "9",
        "--limit-val",
        "5",
        "--epochs",
        "1",
        "--out",
        str(run),
    )
    assert rc == 0, out
    record = json.loads((run / "train.json").read_text())
    assert record["dataset"]["name"] == "cifar10"
    assert (record["dataset"]["train_size"], record["dataset"]["val_size"]) == (9, 5)
    assert record["config"]["data"]["limit_train"] == 9
    assert record["dataset"]["class_names"][:2] == ["airplane", "automobile"]

"""``tlx train --nproc``: launcher options checked before any process starts, and the worker
command line is this command line minus the launcher's options."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.train import launch as launch_mod
from exporter.train.launch import LaunchSpec, WorkerFailed

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nproc", "0"], "--nproc must be >= 1"),
        (["--nproc", "3", "--batch-size", "8"], "must divide by the number of processes (3"),
        (["--nproc", "2", "--nnodes", "2"], "--rdzv-endpoint"),
        (["--nproc", "2", "--max-restarts", "-1"], "--max-restarts"),
    ],
)
def test_bad_launcher_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_no_torchrun_inside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    result = runner.invoke(app, ["train", "--nproc", "2"])
    assert result.exit_code == 2 and "under torchrun already" in result.output


def test_workers_get_this_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_launch(spec: LaunchSpec, args: list[str]) -> None:
        seen.update(spec=spec, args=args)
        raise WorkerFailed("rank 1 exited", exit_code=143)

    monkeypatch.setattr(launch_mod, "launch", fake_launch)
    line = "train --nproc 2 --max-restarts 1 --data synthetic --no-amp --epochs 3 --lr auto -q"
    result = runner.invoke(app, [*line.split(), "--no-augment", "--batch-size", "4"])
    assert result.exit_code == 143  # the workers' status, and no second error line
    assert "error" not in result.output
    assert seen["spec"] == LaunchSpec(nproc=2, max_restarts=1)
    args = seen["args"]
    assert isinstance(args, list)
    assert "--nproc" not in args and "--max-restarts" not in args
    for pair in (["--epochs", "3"], ["--lr", "auto"], ["--batch-size", "4"]):
        assert args[args.index(pair[0]) + 1] == pair[1]
    assert {"--no-amp", "--quiet", "--no-augment"} <= set(args)
    assert "--weights" not in args  # defaults are the workers' own
    assert args[args.index("--out") + 1].startswith("artifacts/synthetic-")  # one shared name


def test_error_text_with_brackets_is_printed_not_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    # gloo's messages carry source paths like "[/__w/pytorch/.../pair.cc:152]".
    from exporter.cli.app import fail

    fail("lost peer [/__w/pytorch/gloo/pair.cc:152] refused", 3)
    assert "[/__w/pytorch/gloo/pair.cc:152]" in capsys.readouterr().err

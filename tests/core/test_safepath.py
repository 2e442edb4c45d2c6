"""No write, replace or delete of tlx reaches outside the run folder through a symbolic link."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter.core import fsio
from exporter.core.errors import EXIT_USAGE
from exporter.core.runlock import LOCK_NAME, holder_of, run_lock
from exporter.core.safepath import UnsafePath, guard, write_root


def _outside(tmp_path: Path) -> Path:
    """A folder outside the run with one file whose bytes must survive."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "v").write_text("precious\n")
    return out


def _unchanged(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["v"]
    assert (out / "v").read_text() == "precious\n"


def test_guard_refuses_a_link_anywhere_below_the_root(tmp_path: Path) -> None:
    run, out = tmp_path / "run", _outside(tmp_path)
    (run / "sub").mkdir(parents=True)
    (run / "triton").symlink_to(out)
    (run / "report.json").symlink_to(out / "v")
    (run / "dangling").symlink_to(tmp_path / "canary")
    for bad in ("triton/m/config.pbtxt", "triton", "report.json", "dangling", "dangling/x"):
        with pytest.raises(UnsafePath, match="symbolic link") as err:
            guard(run / bad, root=run)
        assert str(run / bad.split("/")[0]) in str(err.value)
        assert err.value.exit_code == EXIT_USAGE
    for good in ("sub/new/file", "missing", "sub"):
        assert guard(run / good, root=run) == run / good
    with pytest.raises(UnsafePath, match="outside the run folder"):
        guard(run / "sub" / ".." / ".." / "elsewhere", root=run)


def test_the_run_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "run"
    real.mkdir(parents=True)
    run = tmp_path / "run"
    run.symlink_to(real, target_is_directory=True)
    with run_lock(run, "test"):
        fsio.write_text(run / "a.txt", "x")
        fsio.write_text(real / "b.txt", "y")  # its resolved spelling is the same run
    assert (real / "a.txt").read_text() == "x" and (real / "b.txt").read_text() == "y"


def test_paths_under_no_run_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert guard(tmp_path / "link" / "x") == tmp_path / "link" / "x"


def test_fsio_writers_refuse_links_under_a_held_root(tmp_path: Path) -> None:
    run, out = tmp_path / "run", _outside(tmp_path)
    run.mkdir()
    (run / "verify.json").symlink_to(out / "v")
    (run / "triton").symlink_to(out)
    with write_root(run):
        with pytest.raises(UnsafePath, match=r"verify\.json"):
            fsio.write_json(run / "verify.json", {"a": 1})
        with pytest.raises(UnsafePath, match="triton"), fsio.atomic_dir(run / "triton" / "m"):
            pass
        with pytest.raises(UnsafePath, match="triton"):
            fsio.clean_stale_temps(run / "triton")
    _unchanged(out)
    assert (run / "verify.json").is_symlink()


@pytest.mark.parametrize("dangling", [False, True])
def test_a_linked_lock_file_is_refused_and_its_target_untouched(
    tmp_path: Path, dangling: bool
) -> None:
    run, out = tmp_path / "run", _outside(tmp_path)
    run.mkdir()
    target = tmp_path / "canary" if dangling else out / "v"
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(UnsafePath, match=re.escape(LOCK_NAME)), run_lock(run, "verify"):
        pass
    _unchanged(out)
    assert not (tmp_path / "canary").exists()
    assert holder_of(run) == "unknown"  # never quotes the link's target


def test_a_link_swapped_in_after_the_check_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_NOFOLLOW on the lock file closes the window between the check and the open."""
    import exporter.core.runlock as runlock

    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).symlink_to(tmp_path / "canary")
    monkeypatch.setattr(runlock, "guard", lambda path, root: path)
    with pytest.raises(UnsafePath, match=re.escape(LOCK_NAME)), run_lock(run, "verify"):
        pass
    assert not (tmp_path / "canary").exists()


def test_cli_export_triton_force_into_a_linked_folder_exits_2(
    tmp_path: Path, onnx_run: Path, link_run
) -> None:
    from typer.testing import CliRunner

    from exporter.cli import app

    run, out = link_run(onnx_run, tmp_path / "run"), _outside(tmp_path)
    (out / "m").mkdir()
    (out / "m" / "config.pbtxt").write_text("keep\n")
    os.symlink(out, run / "triton")
    argv = ["export", str(run), "--format", "triton", "--model-name", "m", "--force"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert str(run / "triton") in result.stderr and "Traceback" not in result.stderr
    assert (out / "m" / "config.pbtxt").read_text() == "keep\n"
    assert sorted(p.name for p in out.iterdir()) == ["m", "v"]
    assert sorted(p.name for p in (out / "m").iterdir()) == ["config.pbtxt"]


def test_cli_verify_with_a_linked_lock_exits_2(tmp_path: Path, onnx_run: Path, link_run) -> None:
    from typer.testing import CliRunner

    from exporter.cli import app

    run, out = link_run(onnx_run, tmp_path / "run"), _outside(tmp_path)
    (run / LOCK_NAME).unlink(missing_ok=True)
    (run / LOCK_NAME).symlink_to(out / "v")
    result = CliRunner().invoke(app, ["verify", str(run), "--runtimes", "ort-cpu"])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert str(run / LOCK_NAME) in result.stderr and "Traceback" not in result.stderr
    _unchanged(out)


def test_resume_into_a_linked_checkpoint_folder_exits_2_before_training(
    tmp_path: Path, make_run_folder
) -> None:
    from exporter.core.config import DataConfig, TrainConfig
    from exporter.train import fit, resume_config
    from exporter.train.checkpoint import save_checkpoint

    run, out = tmp_path / "run", _outside(tmp_path)
    data = DataConfig(source="synthetic", train_size=10, val_size=8, image_size=32, augment=False)
    cfg = TrainConfig(data=data, weights="none", epochs=1, batch_size=8, out=str(run))
    # A trained run's files, written directly: the refusal comes before the checkpoint's
    # state is read, so training one (a 1.5 GB checkpoint, ~10 s) would only cost time.
    make_run_folder(run)
    save_checkpoint(run, {"config": cfg.to_dict()}, {"epoch": 1, "step": 0})
    moved = out / "checkpoint"
    os.replace(run / "checkpoint", moved)
    (run / "checkpoint").symlink_to(moved)
    before = {p.name: p.read_bytes() for p in moved.iterdir()}
    weights = (run / "model.safetensors").read_bytes()
    with pytest.raises(UnsafePath, match=re.escape(str(run / "checkpoint"))):
        fit(resume_config(run), resume=True)
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == before
    assert (run / "model.safetensors").read_bytes() == weights

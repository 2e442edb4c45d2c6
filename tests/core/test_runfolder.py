"""The opened run: train.json and the manifest read once, each file hashed once per command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exporter.core import fsio
from exporter.core import manifest as manifest_mod
from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.manifest import FileRecord, Manifest, check_file, save_manifest
from exporter.core.preprocess import Preprocessing
from exporter.core.runfolder import Run, open_run


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    """A run folder with a tiny stand-in for the weights (open_run checks only that it is
    a file) and a manifest listing it and one artifact."""
    run = tmp_path / "run"
    run.mkdir()
    record = {
        "dataset": {"class_names": ["a", "b"]},
        "preprocessing": Preprocessing(image_size=32).to_dict(),
    }
    (run / "train.json").write_text(json.dumps(record))
    (run / "model.safetensors").write_bytes(b"weights" * 100)
    (run / "model.onnx").write_bytes(b"onnx" * 100)
    save_manifest(run, Manifest(source=FileRecord.of(run, "model.safetensors"), metadata={}))
    return run


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files hashed from now on."""
    names: list[str] = []
    real = fsio.sha256_file

    def counting(path: str | os.PathLike[str], **kwargs: int) -> str:
        names.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(fsio, "sha256_file", counting)
    monkeypatch.setattr(manifest_mod, "sha256_file", counting)
    return names


def _touch_later(path: Path) -> None:
    """Give the file a new mtime even on a coarse clock."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_open_run_returns_a_path_like_run_and_reuses_an_open_one(small_run: Path) -> None:
    run = open_run(small_run)
    assert isinstance(run, Run)
    assert open_run(run) is run  # a stage called with an opened run does not reopen it
    assert Path(run) == small_run and os.fspath(run) == str(small_run)
    assert str(run) == str(small_run) and f"{run}" == str(small_run)  # messages name the folder
    reopened = open_run(os.fspath(run))  # its folder opens afresh: a new command's view
    assert reopened is not run and reopened.class_names == ["a", "b"]


def test_manifest_is_read_once_and_again_only_after_a_write(
    small_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.core.runfolder as runfolder

    loads: list[Path] = []
    real = runfolder.load_manifest
    monkeypatch.setattr(runfolder, "load_manifest", lambda d: loads.append(d) or real(d))
    run = open_run(small_run)
    first = run.manifest
    first.metadata["changed"] = True  # callers get a copy: the run's view stays as on disk
    assert "changed" not in run.manifest.metadata and len(loads) == 1

    first.metadata = {"saved": 1}
    run.save_manifest(first)  # its own write: remembered, not read back
    assert run.manifest.metadata == {"saved": 1} and len(loads) == 1

    other = manifest_mod.load_manifest(small_run)  # another command writes the file
    other.metadata = {"other": 2}
    save_manifest(small_run, other)
    assert run.manifest.metadata == {"other": 2} and len(loads) == 2


def test_edit_manifest_saves_on_success_and_forgets_on_error(small_run: Path) -> None:
    run = open_run(small_run)
    with run.edit_manifest() as m:
        m.metadata = {"edited": True}
    assert run.manifest.metadata == {"edited": True}
    with pytest.raises(RuntimeError), run.edit_manifest() as m:
        m.metadata = {"lost": True}
        raise RuntimeError("boom")
    assert run.manifest.metadata == {"edited": True}  # nothing saved, nothing remembered


def test_missing_manifest_keeps_its_message(small_run: Path) -> None:
    (small_run / "manifest.json").unlink()
    run = open_run(small_run)
    assert not run.has_manifest
    with pytest.raises(InputFileError, match="run `tlx export"):
        _ = run.manifest


def test_each_file_is_hashed_once_per_opened_run(small_run: Path, hashed: list[str]) -> None:
    run = open_run(small_run)
    record = run.manifest.source
    for _ in range(3):
        assert run.check_file(record) == small_run / "model.safetensors"
    assert run.file_record("model.safetensors") == record
    assert hashed == ["model.safetensors"]
    open_run(small_run).check_file(record)  # a new command hashes afresh
    assert hashed == ["model.safetensors"] * 2


def test_a_changed_file_is_hashed_again_and_refused(small_run: Path, hashed: list[str]) -> None:
    run = open_run(small_run)
    record = run.manifest.source
    run.check_file(record)
    weights = small_run / "model.safetensors"
    weights.write_bytes(b"WEIGHTS" * 100)  # same size, other bytes
    _touch_later(weights)
    with pytest.raises(IntegrityError) as opened_err:
        run.check_file(record)
    with pytest.raises(IntegrityError) as plain_err:
        check_file(small_run, record)
    assert str(opened_err.value) == str(plain_err.value)  # one message for both paths
    assert hashed.count("model.safetensors") == 3


def test_missing_and_symlinked_files_are_refused(small_run: Path) -> None:
    run = open_run(small_run)
    record = run.file_record("model.onnx")
    (small_run / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        run.check_file(record)
    (small_run / "model.onnx").symlink_to(small_run / "model.safetensors")
    with pytest.raises(IntegrityError, match="symbolic link"):
        run.check_file(record)


def test_onnx_safety_check_runs_once_while_the_files_stay(
    small_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.core.onnx_safety as onnx_safety

    checked: list[Path] = []
    monkeypatch.setattr(onnx_safety, "check_onnx_file", checked.append)
    run = open_run(small_run)
    records = [run.file_record("model.onnx")]
    onnx = small_run / "model.onnx"
    run.check_files(records, onnx=onnx)
    run.check_files(records, onnx=onnx)
    assert checked == [onnx]
    _touch_later(onnx)
    run.check_files(records, onnx=onnx)
    assert checked == [onnx, onnx]


# --- one definition of every run-folder file name, one run type --------------------------

_NAMES_HOME = {"manifest.json": "core/manifest.py"}  # every other name: core/runfolder.py


def _library_strings() -> list[tuple[str, str, int]]:
    """Every string constant of the library (docstrings aside): (module, text, line)."""
    import ast

    import exporter

    root = Path(exporter.__file__).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        rel = path.relative_to(root).as_posix()
        out += [
            (rel, node.value, node.lineno)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            if id(node) not in docs
        ]
    return out


def test_each_run_folder_file_name_is_spelled_once_in_the_library() -> None:
    import exporter.core.runfolder as runfolder
    from exporter.core.manifest import MANIFEST_NAME

    names = {
        v for k, v in vars(runfolder).items() if k.isupper() and isinstance(v, str) and "." in v
    } | {MANIFEST_NAME}
    # The reports every stage reads or writes must be among them.
    for report in ("verify.json", "verify.md", "bench.json", "bench.md", "optimize.md"):
        assert report in names
    for report in ("loadtest.json", "tune.json", "train.json", "export.json", "demo.json"):
        assert report in names
    spelled: dict[str, list[str]] = {}
    for module, text, line in _library_strings():
        if text in names:
            spelled.setdefault(text, []).append(f"{module}:{line}")
    for name in sorted(names):
        home = _NAMES_HOME.get(name, "core/runfolder.py")
        assert [s.split(":")[0] for s in spelled.get(name, [])] == [home], (name, spelled[name])


def test_no_stage_branches_on_the_run_type() -> None:
    """One run type, taken by every stage: only core tells an opened run from a path."""
    import exporter

    root = Path(exporter.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        if not rel.startswith("core/"):
            assert "isinstance(" not in text or ", Run)" not in text, rel
        assert "RunInfo" not in text, rel


# --- the one stale-weights rule ---------------------------------------------------------


def test_manifest_to_extend_drops_entries_of_other_weights(small_run: Path) -> None:
    from exporter.core.manifest import ArtifactEntry

    run = open_run(small_run)
    onnx = ArtifactEntry("model.onnx", "onnx", [run.file_record("model.onnx")])
    with run.edit_manifest() as m:
        m.artifacts["model.onnx"] = onnx
    kept, dropped = run.manifest_to_extend()
    assert dropped == [] and set(kept.artifacts) == {"model.onnx"}  # same weights: kept

    (small_run / "model.safetensors").write_bytes(b"retrained" * 100)
    fresh, dropped = open_run(small_run).manifest_to_extend()
    assert dropped == ["model.onnx"] and fresh.artifacts == {}
    assert fresh.source == FileRecord.of(small_run, "model.safetensors")
    assert open_run(small_run).manifest.artifacts  # nothing saved: the caller saves


def test_manifest_to_extend_replaces_a_malformed_manifest_only_with_force(
    small_run: Path,
) -> None:
    (small_run / "manifest.json").write_text("{not json")
    with pytest.raises(InputFileError, match=r"malformed.*--force"):
        open_run(small_run).manifest_to_extend()
    fresh, dropped = open_run(small_run).manifest_to_extend(force=True)
    assert fresh.artifacts == {} and dropped == []


# --- typed readers of verify.json and bench.json, one device rule ------------------------


def test_verify_and_bench_readers_share_one_device_rule(small_run: Path) -> None:
    from exporter.core.runreports import (
        ReportUnreadable,
        read_recommendations,
        read_verify,
        same_device,
    )

    assert read_verify(small_run) is None and read_recommendations(small_run, "cpu") == []
    cand = {"runtime": "ort-cuda", "artifact": "model.onnx", "passed": True, "sha256": "s"}
    failed = {**cand, "runtime": "eager", "passed": False}
    verify = {"config": {"device": "cuda:1"}, "candidates": [cand, failed, "junk"]}
    (small_run / "verify.json").write_text(json.dumps(verify))
    record = read_verify(small_run)
    assert record is not None and len(record.candidates) == 2
    assert [c.runtime for c in record.passed_on("cuda")] == ["ort-cuda"]  # same kind
    assert record.passed_on("cpu") == []
    rec = {"device": "cuda:0", "batch_size": 8, "artifact": "model.onnx", "verified": True}
    recs = [rec, {**rec, "batch_size": 64}, {**rec, "verified": False}, {**rec, "device": "cpu"}]
    (small_run / "bench.json").write_text(json.dumps({"recommendations": recs}))
    assert [r.batch_size for r in read_recommendations(small_run, "cuda")] == [64, 8]
    assert [r.device for r in read_recommendations(small_run, "cpu")] == ["cpu"]
    assert same_device("cuda", "cuda:3") and not same_device("cpu", "cuda")
    assert not same_device("tpu", "tpu")  # an unknown word matches nothing
    (small_run / "verify.json").write_text("[]")
    with pytest.raises(ReportUnreadable, match=r"verify\.json is unreadable"):
        read_verify(small_run)
    (small_run / "bench.json").write_text("{bad")
    assert read_recommendations(small_run, "cuda") == []  # advice: unreadable is none

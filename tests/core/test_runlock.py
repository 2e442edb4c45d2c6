"""The run-folder lock: concurrent read-modify-writes of one run lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from exporter.core.manifest import FileRecord, Manifest, load_manifest, save_manifest
from exporter.core.preprocess import Preprocessing
from exporter.core.runfolder import Run
from exporter.core.runlock import LOCK_NAME, RunBusy, holder_of, lock_policy, run_lock

ROOT = Path(__file__).resolve().parents[2]

_HOLD = textwrap.dedent(
    """
    import sys, time
    from exporter.core.runlock import run_lock
    with run_lock(sys.argv[1], "export"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _hold(run: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the run's lock for ``seconds`` (returns once it holds it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_no_wait_names_the_holders_pid(tmp_path: Path) -> None:
    proc = _hold(tmp_path, 30)
    try:
        with (
            lock_policy(wait=False),
            pytest.raises(RunBusy, match=rf"pid {proc.pid}: export") as err,
            run_lock(tmp_path, "optimize"),
        ):
            pass
        assert err.value.exit_code == 3
    finally:
        proc.kill()
        proc.wait()


def test_a_second_command_waits_with_one_message(tmp_path: Path) -> None:
    proc = _hold(tmp_path, 1.5)
    said: list[str] = []
    t0 = time.monotonic()
    with lock_policy(wait=True, notify=said.append), run_lock(tmp_path, "verify"):
        waited = time.monotonic() - t0
        assert holder_of(tmp_path).startswith(f"pid {os.getpid()}: verify")
    proc.wait()
    assert len(said) == 1 and f"pid {proc.pid}" in said[0] and str(tmp_path) in said[0]
    assert waited > 0.5  # it did wait for the holder (not a timing claim: a lower bound)


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(
    tmp_path: Path,
) -> None:
    order: list[str] = []
    with run_lock(tmp_path, "export"):
        with run_lock(tmp_path, "manifest"):  # nested: no deadlock
            order.append("nested")

        def other() -> None:
            with run_lock(tmp_path, "bench"):
                order.append("other")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("outer-done")
    t.join(timeout=30)
    assert order == ["nested", "outer-done", "other"]


def test_a_folder_the_lock_created_is_removed_when_nothing_was_written(tmp_path: Path) -> None:
    run = tmp_path / "new-run"
    with run_lock(run, "train", create=True):
        assert (run / LOCK_NAME).is_file()
    assert not run.exists()
    with run_lock(run, "train", create=True):
        (run / "train.json").write_text("{}")
    assert (run / "train.json").is_file()
    with run_lock(tmp_path / "missing", "export"):  # not created: the command reports it
        pass
    assert not (tmp_path / "missing").exists()


_ADD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from exporter.core.manifest import ArtifactEntry, FileRecord
    from exporter.core.preprocess import Preprocessing
    from exporter.core.runfolder import Run
    run, name = Run(Path(sys.argv[1]), {}, ["a"], Preprocessing(32)), sys.argv[2]
    with run.edit_manifest() as manifest:
        time.sleep(0.2)  # widen the read-modify-write window: without the lock, updates die
        rec = FileRecord(name, "0" * 64, 1)
        manifest.artifacts[name] = ArtifactEntry(name=name, format="onnx", files=[rec])
    """
)


def test_concurrent_manifest_updates_are_all_kept(tmp_path: Path) -> None:
    source = FileRecord("model.safetensors", "1" * 64, 1)
    save_manifest(tmp_path, Manifest(source=source, metadata={}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    names = [f"model.v{i}.onnx" for i in range(6)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _ADD, str(tmp_path), n], env=env) for n in names
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert sorted(load_manifest(tmp_path).artifacts) == sorted(names)


def test_a_reader_never_sees_a_half_written_manifest(tmp_path: Path) -> None:
    source = FileRecord("model.safetensors", "1" * 64, 1)
    save_manifest(tmp_path, Manifest(source=source, metadata={}))
    stop, seen, bad = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(len(json.loads((tmp_path / "manifest.json").read_text())["metadata"]))
            except (json.JSONDecodeError, KeyError) as exc:  # pragma: no cover - the failure
                bad.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    run = Run(tmp_path, {}, ["a"], Preprocessing(32))
    for i in range(200):
        with run.edit_manifest() as m:
            m.metadata = {f"k{j}": "x" * 2000 for j in range(i % 20 + 1)}  # ~40 kB at most
    stop.set()
    reader.join()
    assert not bad and len(seen) > 0

"""What a killed process leaves: a dead backend stub stops `tlx serve` (exit 3); a killed
`tlx serve` leaves no process, folder or shared memory; a lost start-up handshake is retried.

The two real-server tests each start their own server (each ends it in its own way).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from exporter.core.errors import EnvironmentUnavailable
from exporter.serve import reaper
from exporter.serve.client import TritonHttpClient
from exporter.serve.launch import handshake_race

STUB = "triton_python_backend_stub"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- without a server ---------------------------------------------------------------------


def _failed_start(error: BaseException) -> EnvironmentUnavailable:
    try:
        raise error
    except BaseException as cause:
        try:
            raise EnvironmentUnavailable(f"the Triton server failed to start: {cause}") from cause
        except EnvironmentUnavailable as exc:
            return exc


def get_config_from_handshake_server() -> None:  # named like PyTriton's, for the traceback
    raise ConnectionRefusedError(111, "Connection refused")


def test_a_lost_handshake_is_recognised_however_it_reads() -> None:
    timeout = TimeoutError("Timeout occurred while waiting for config file /w/vgg16-config.sock")
    assert handshake_race(_failed_start(timeout))
    assert handshake_race(_failed_start(ValueError("Invalid JSON response from the server.")))
    try:
        get_config_from_handshake_server()
    except ConnectionRefusedError as refused:  # no marker in the text, only in the traceback
        assert handshake_race(_failed_start(refused))
    assert not handshake_race(_failed_start(RuntimeError("'_recursion_count'")))
    assert not handshake_race(EnvironmentUnavailable("--http-port 8000 is already in use"))


def test_stale_workspaces_of_dead_owners_are_cleaned_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "workspace_root", lambda: tmp_path)
    mine = reaper.new_workspace()  # this process: alive
    dead = _dead_pid()
    stale = tmp_path / f"{dead}-x"
    (stale / "attempt-1" / "pytriton").mkdir(parents=True)
    (stale / reaper.OWNER_FILE).write_text(f"{dead} 12345\n")
    repository = Path(tempfile.mkdtemp(prefix="folder", dir="/tmp"))  # as Triton makes it
    (stale / "attempt-1" / reaper.REPOSITORY_FILE).write_text(str(repository))
    elsewhere = tmp_path.parent / "not-tritons"
    elsewhere.mkdir(exist_ok=True)
    (mine / reaper.REPOSITORY_FILE).write_text(str(elsewhere))
    shm = reaper.SHM_DIR / f"{reaper.SHM_PREFIX}{dead}-test"
    shm_made = reaper.SHM_DIR.is_dir()
    if shm_made:
        shm.write_bytes(b"x")
    reused = tmp_path / f"{os.getpid()}-reused"  # our pid, another start time: a dead owner
    reused.mkdir()
    (reused / reaper.OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    try:
        removed = reaper.clean_stale_workspaces()
    finally:
        shutil.rmtree(repository, ignore_errors=True)
    assert sorted(removed) == sorted([stale, reused])
    assert mine.is_dir() and elsewhere.is_dir()
    assert not stale.exists() and not repository.exists()
    assert not (shm_made and shm.exists())


def test_a_workspace_root_that_is_a_link_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(reaper, "workspace_root", lambda: tmp_path / "root")
    with pytest.raises(EnvironmentUnavailable, match="not a folder of this user"):
        reaper.new_workspace()
    assert not list((tmp_path / "elsewhere").iterdir())


def test_the_reaper_kills_and_deletes_what_it_was_told_when_its_owner_vanishes(
    tmp_path: Path,
) -> None:
    tree = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300"])
    assert _wait_until(lambda: len(reaper.descendants(tree.pid)) == 2, 10)
    kids = reaper.descendants(tree.pid)
    folder = tmp_path / "workspace"
    folder.mkdir()
    r = reaper.Reaper()
    r.watch_process(tree.pid)
    r.watch_folder(folder)
    os.close(r._write_end)  # what the owner's death does: the pipe closes without "done"
    r.process.wait(timeout=30)
    tree.wait(timeout=10)
    assert tree.returncode == -signal.SIGKILL
    assert _wait_until(lambda: not any(reaper.start_time(k) for k in kids), 10)
    assert not folder.exists()


def test_a_reaper_told_done_touches_nothing(tmp_path: Path) -> None:
    tree = subprocess.Popen(["sleep", "300"])
    folder = tmp_path / "kept"
    folder.mkdir()
    r = reaper.Reaper()
    r.watch_process(tree.pid)
    r.watch_folder(folder)
    r.close()
    assert r.process.returncode == 0
    assert tree.poll() is None and folder.is_dir()
    tree.kill()
    tree.wait()


# --- a real `tlx serve` ---------------------------------------------------------------------


def test_sigkill_of_tlx_serve_leaves_no_process_folder_or_shared_memory(
    onnx_run: Path, start_server, process_tree
) -> None:
    sp = start_server(onnx_run, "--max-batch", "4")
    sp.wait_ready()
    pid = sp.proc.pid
    tree = process_tree(pid)
    triton = [p for p in tree if "tritonserver" in _cmdline(p) or STUB in _cmdline(p)]
    assert len(triton) >= 2, {p: _cmdline(p) for p in tree}
    folders = [f for f in reaper.workspace_root().glob(f"{pid}-*")]
    assert len(folders) == 1
    repository = Path((next(folders[0].glob("*/" + reaper.REPOSITORY_FILE))).read_text())
    assert repository.is_dir()

    os.kill(pid, signal.SIGKILL)
    sp.proc.wait(timeout=10)
    gone = _wait_until(lambda: not any(reaper.start_time(p) for p in triton), 5)
    assert gone, {p: _cmdline(p) for p in triton if reaper.start_time(p)}
    assert _wait_until(lambda: not any(reaper.start_time(p) for p in tree), 15)  # reaper too
    assert not folders[0].exists() and not repository.exists()
    assert not list(reaper.SHM_DIR.glob(f"{reaper.SHM_PREFIX}{pid}-*"))


def test_a_killed_backend_stub_stops_tlx_serve_with_exit_3_naming_it(
    onnx_run: Path, start_server, process_tree
) -> None:
    sp = start_server(onnx_run, "--max-batch", "4", "--instances", "2")
    sp.wait_ready()
    tree = process_tree(sp.proc.pid)
    stubs = sorted(p for p in tree if STUB in _cmdline(p))
    assert len(stubs) == 2, {p: _cmdline(p) for p in tree}
    instance = _cmdline(stubs[1]).split()[9]

    os.kill(stubs[1], signal.SIGKILL)
    try:
        rc = sp.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        sp.stop()
        pytest.fail(f"tlx serve kept running with a dead instance:\n{sp.output()}")
    said = "".join(sp.stderr)
    assert rc == 3, sp.output()
    assert f"model instance {instance} (backend stub pid {stubs[1]}) died" in said, said
    assert "Traceback" not in said
    assert _wait_until(lambda: not any(reaper.start_time(p) for p in tree), 15)
    with TritonHttpClient(sp.url, timeout_s=5) as client:
        assert not client.ready()  # nothing answers health any more

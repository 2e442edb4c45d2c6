"""Nothing `tlx serve` started outlives it, even when it is killed with SIGKILL.

PyTriton starts tritonserver with ``PR_SET_PDEATHSIG = SIGTERM``: on SIGKILL of tlx,
tritonserver begins a graceful stop that drains for seconds, its Python-backend stubs linger,
and the workspace (a copy of tritonserver, ~20 MB), the log folder and the shared-memory
regions stay behind. Two measures, both here:

- A reaper process (:class:`Reaper`, ``python -m exporter.serve.reaper``) reads a pipe from
  tlx. tlx writes the pid of every process it starts and every folder it creates; when the
  pipe closes without a ``done`` line (tlx died, however), the reaper SIGKILLs those process
  trees and deletes those folders and tlx's shared-memory regions. It ignores SIGINT, SIGTERM
  and SIGHUP and runs in its own session, so a signal meant for tlx's terminal or process
  group leaves it there to clean up.
- Every start's folders live under one root (:func:`workspace_root`), one folder per start
  named for its owner; :func:`clean_stale_workspaces` deletes those whose owner is dead (the
  reaper itself may have been killed too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

OWNER_FILE = "owner"
REPOSITORY_FILE = "triton-repository"  # written by launch.py into each start-up attempt
# PyTriton names the Python backend's shared-memory regions "pytrtion<pid>-<hex>..." (sic).
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "pytrtion"


def workspace_root() -> Path:
    """The one folder under which every ``tlx serve`` of this user keeps its files."""
    return Path(tempfile.gettempdir()) / f"tlx-serve-{os.getuid()}"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None when it is gone or a zombie).

    A pid with its start time names one process; a pid alone may be reused.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's children lists), parents first."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                for child in map(int, (task / "children").read_text().split()):
                    if child not in found:
                        found.append(child)
                        todo.append(child)
    return found


def kill_tree(pid: int, started: str | None) -> None:
    """SIGKILL ``pid`` (if it is still the process that started at ``started``) and its tree."""
    if started is None or start_time(pid) != started:
        return
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def remove_shared_memory(owner_pid: int) -> None:
    for path in SHM_DIR.glob(f"{SHM_PREFIX}{owner_pid}-*"):
        with contextlib.suppress(OSError):
            path.unlink()


def remove_triton_repository(folder: Path) -> None:
    """Delete the Triton repository copy recorded in ``folder`` (launch.py), if it is one."""
    try:
        recorded = Path((folder / REPOSITORY_FILE).read_text().strip())
    except OSError:
        return
    # Only what Triton makes (mkdtemp "/tmp/folderXXXXXX"), whatever the file says.
    if recorded.parent == Path("/tmp") and recorded.name.startswith("folder"):
        shutil.rmtree(recorded, ignore_errors=True)


def remove_workspace(folder: Path) -> None:
    """Delete a start's folder and the Triton repository copy each of its attempts recorded."""
    for attempt in folder.glob("*/"):
        remove_triton_repository(attempt)
    shutil.rmtree(folder, ignore_errors=True)


def _own_root() -> Path:
    """:func:`workspace_root`, created if missing; refused if another user could have made it.

    Raises:
        EnvironmentUnavailable: it is a link, not a folder, or not this user's (exit 3).
    """
    from exporter.core.errors import EnvironmentUnavailable

    root = workspace_root()
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise EnvironmentUnavailable(
            f"{root} is not a folder of this user (uid {os.getuid()}); remove it, or point "
            "TMPDIR elsewhere"
        )
    return root


def new_workspace() -> Path:
    """A fresh folder for this process's start, under :func:`workspace_root`, owner recorded."""
    root = _own_root()
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    (folder / OWNER_FILE).write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    return folder


def clean_stale_workspaces() -> list[Path]:
    """Delete (and return) the folders, and the shared memory, of earlier starts whose owner
    is dead."""
    root = _own_root()
    removed = []
    for folder in sorted(root.glob("*")):
        try:
            pid_text, started = (folder / OWNER_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        if start_time(pid) == started:
            continue  # its owner is alive
        remove_workspace(folder)
        remove_shared_memory(pid)
        removed.append(folder)
    return removed


class Reaper:
    """tlx's side of the reaper: register what to clean up; :meth:`close` when stopped cleanly."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()  # both non-inheritable: no child holds them
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exporter.serve.reaper", str(os.getpid())],
                stdin=read_end,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": _package_parent()},
            )
        finally:
            os.close(read_end)

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write_end, (line + "\n").encode())

    def watch_process(self, pid: int) -> None:
        started = start_time(pid)
        if started is not None:
            self._send(f"pid {pid} {started}")

    def watch_folder(self, path: Path) -> None:
        self._send(f"dir {path}")

    def close(self) -> None:
        """Everything was stopped and removed by tlx itself: the reaper exits doing nothing."""
        self._send("done")
        with contextlib.suppress(OSError):
            os.close(self._write_end)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def _package_parent() -> str:
    parent = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return parent + (os.pathsep + rest if rest else "")


def main(owner_pid: int) -> None:
    """Wait for the pipe on stdin to close, then clean up unless told ``done``."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    processes: list[tuple[int, str]] = []
    folders: list[Path] = []
    done = False
    for raw in sys.stdin.buffer:
        kind, _, value = raw.decode("utf-8", "replace").strip().partition(" ")
        if kind == "pid":
            pid, started = value.split()
            processes.append((int(pid), started))
        elif kind == "dir":
            folders.append(Path(value))
        elif kind == "done":
            done = True
    if done:
        return
    for pid, started in processes:
        kill_tree(pid, started)
    for folder in folders:
        remove_workspace(folder)
    remove_shared_memory(owner_pid)


if __name__ == "__main__":
    main(int(sys.argv[1]))

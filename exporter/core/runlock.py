"""The run-folder lock: one command at a time changes a run.

Two commands that read-modify-write the same run (``manifest.json``, reports, weights) would
otherwise lose one of the updates: both read the manifest, each adds its artifact, the last
save wins. Every command that changes a run holds an exclusive ``fcntl.flock`` on
``RUN/.tlx.lock`` for its whole read-modify-write; a second one waits (one line says for
whom) or, under ``--no-wait``, stops with exit 3 naming the holder's pid.

Readers (inspect, predict, serve) take no lock: every file is replaced atomically
(:mod:`exporter.core.fsio`), so a reader sees the old or the new manifest, never a mix.

The lock is re-entrant within one thread (``tlx optimize`` calls ``tlx export``'s library
function, which locks the same run again); another thread or process waits. The kernel drops
a flock when its holder dies, so a killed command never leaves the run locked. The lock file
is never replaced or deleted while in use: a flock belongs to the inode, and a renamed-over
lock file would let two holders in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from exporter.core.errors import EnvironmentUnavailable, InputFileError
from exporter.core.safepath import UnsafePath, guard, write_root

LOCK_NAME = ".tlx.lock"


class RunBusy(EnvironmentUnavailable):
    """Another command holds the run's lock and the caller asked not to wait (exit 3)."""


@dataclass(frozen=True)
class LockPolicy:
    """How a command that finds the run locked behaves: wait (telling ``notify``) or fail."""

    wait: bool = True
    notify: Callable[[str], None] | None = None


_DEFAULT_POLICY = LockPolicy()
_POLICY: ContextVar[LockPolicy | None] = ContextVar("tlx_lock_policy", default=None)
_HELD = threading.local()  # .runs: the resolved run folders this thread holds


@contextlib.contextmanager
def lock_policy(*, wait: bool, notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Within the block, :func:`run_lock` waits (telling ``notify`` once) or raises RunBusy.

    The CLI sets this from ``--no-wait``; library calls keep the default (wait, silently).
    """
    token = _POLICY.set(LockPolicy(wait=wait, notify=notify))
    try:
        yield
    finally:
        _POLICY.reset(token)


def _held() -> set[str]:
    if not hasattr(_HELD, "runs"):
        _HELD.runs = set()
    return _HELD.runs


def holder_of(run_dir: str | os.PathLike[str]) -> str:
    """What the lock file says about its holder ("pid 123: tlx export ..."), or "unknown"."""
    try:  # never through a link: the note would quote another file's first line
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            text = os.read(fd, 400).decode("utf-8", errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return "unknown"
    return " ".join(text.split())[:200] or "unknown"


def _open_lock_file(run: Path) -> int:
    path = guard(run / LOCK_NAME, root=run)
    try:
        # O_NOFOLLOW: a link swapped in after the check is refused too (ELOOP), dangling or not.
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(
                f"{path} is a symbolic link: tlx does not write through links inside a run "
                "folder; remove it and run the command again"
            ) from exc
        raise InputFileError(
            f"cannot create the lock file {run / LOCK_NAME} ({exc.strerror}): commands that "
            "change a run need write access to its folder"
        ) from exc


def _flock(fd: int, run: Path, policy: LockPolicy) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    except OSError as exc:  # e.g. ENOLCK on a filesystem without flock
        raise EnvironmentUnavailable(
            f"cannot lock {run / LOCK_NAME} ({exc.strerror}): put the run folder on a local "
            "filesystem"
        ) from exc
    holder = holder_of(run)
    if not policy.wait:
        raise RunBusy(
            f"{run} is in use by another tlx command ({holder}); wait for it to finish, or "
            "run again without --no-wait to wait for it"
        )
    if policy.notify is not None:
        policy.notify(f"waiting for another tlx command ({holder}) to finish with {run}")
    fcntl.flock(fd, fcntl.LOCK_EX)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _acquire(run: Path, command: str, *, create: bool) -> int | None:
    policy = _POLICY.get() or _DEFAULT_POLICY
    while True:
        fd = _open_lock_file(run)
        try:
            _flock(fd, run, policy)
        except BaseException:
            os.close(fd)
            raise
        # A holder that created the folder may have removed it (and the lock file) on its
        # way out; a lock on a deleted inode protects nothing, so open the new one.
        if _same_file(fd, run / LOCK_NAME):
            break
        os.close(fd)
        if not create and not run.is_dir():
            return None  # the run is gone: the command's own check reports it
        run.mkdir(parents=True, exist_ok=True)
    argv = " ".join(["tlx", *sys.argv[1:]]) if sys.argv and sys.argv[0] else command
    info = f"pid {os.getpid()}: {command} ({argv[:150]})\n".encode()
    with contextlib.suppress(OSError):  # the note is for messages only
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
    return fd


@contextlib.contextmanager
def run_lock(
    run_dir: str | os.PathLike[str], command: str, *, create: bool = False
) -> Iterator[None]:
    """Hold the run's exclusive lock for the block (re-entrant within a thread).

    Args:
        command: what holds it ("export", ...), recorded for the message a waiter sees.
        create: make the folder if missing (``tlx train``); a folder made here that holds
            nothing but the lock file when the block ends is removed again. Without it, a
            missing folder is not locked: the command's own check reports it.

    Raises:
        RunBusy: the run is locked and the :func:`lock_policy` says not to wait.
        InputFileError: the lock file cannot be created (a read-only run folder).
    """
    run = Path(run_dir)
    created = False
    if not run.is_dir():
        if not create or run.exists():
            yield
            return
        try:
            run.mkdir(parents=True)
            created = True
        except FileExistsError:  # another command made it a moment ago: it is theirs
            pass
    key = str(run.resolve())
    held = _held()
    if key in held:  # re-entrant: the outermost block releases it
        yield
        return
    fd = _acquire(run, command, create=create)
    if fd is None:
        yield
        return
    held.add(key)
    try:
        with write_root(run):  # every write below the run is checked for links
            yield
    finally:
        held.discard(key)
        try:
            if created:
                _remove_if_only_lock(run)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _remove_if_only_lock(run: Path) -> None:
    """Undo a folder this lock made when the command wrote nothing into it (still locked)."""
    with contextlib.suppress(OSError):
        if [p.name for p in run.iterdir()] == [LOCK_NAME]:
            (run / LOCK_NAME).unlink()
            run.rmdir()


_T = TypeVar("_T")


def locks_run(command: str) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Decorate a library entry point whose first argument is the run folder: the call
    holds the run's lock (so a stage gets it by construction, not by remembering)."""

    def decorate(fn: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(fn)
        def locked(run_dir: str | os.PathLike[str], *args: Any, **kwargs: Any) -> _T:
            with run_lock(run_dir, command):
                return fn(run_dir, *args, **kwargs)

        return locked

    return decorate

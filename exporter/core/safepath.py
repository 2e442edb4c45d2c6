"""Every path tlx writes, replaces or deletes stays inside the run folder.

A symbolic link planted in a run folder would otherwise turn a write into one elsewhere:
``RUN/.tlx.lock -> ~/notes`` gets the lock note, ``RUN/triton -> /srv/models`` gets its
files deleted and replaced by ``export --force``, ``RUN/checkpoint -> /data`` receives
``state.pt`` (and a dangling link makes tlx create its target). The rule: below the run
folder, no component of a path tlx changes is a symbolic link, the last one included; the
run folder itself may be one (a run kept on another disk).

:func:`guard` is the one check. The writers in :mod:`exporter.core.fsio` call it for every
destination, so do the few places that delete or rename outside fsio. Which folder is "the
run folder" comes from :func:`write_root`, which :func:`exporter.core.runlock.run_lock`
enters for every command that changes a run; a caller may also name the root. The check is
a few ``lstat`` calls, the parts below the root; a path under no root is not checked.

Checking before writing leaves a window in which a link could be swapped in; the files tlx
creates are opened ``O_EXCL`` (temp files) or ``O_NOFOLLOW`` (the lock), which refuse a
link at the last component whatever happens before.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from exporter.core.errors import UsageError


class UnsafePath(UsageError):
    """A path tlx would write leads outside the run folder through a symbolic link (exit 2)."""


_ROOTS: dict[str, int] = {}  # absolute run folder (lexical and resolved spellings) -> depth
_ROOTS_LOCK = threading.Lock()


@contextlib.contextmanager
def write_root(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, :func:`guard` checks every path under ``run_dir`` (re-entrant)."""
    spellings = {os.path.abspath(run_dir), os.path.realpath(run_dir)}
    with _ROOTS_LOCK:
        for s in spellings:
            _ROOTS[s] = _ROOTS.get(s, 0) + 1
    try:
        yield
    finally:
        with _ROOTS_LOCK:
            for s in spellings:
                _ROOTS[s] -= 1
                if not _ROOTS[s]:
                    del _ROOTS[s]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _root_of(path: str, root: str | os.PathLike[str] | None) -> str | None:
    """The deepest run folder (``root``, else a registered one) that holds ``path``."""
    if root is not None:
        candidates = [os.path.abspath(root), os.path.realpath(root)]
    else:
        with _ROOTS_LOCK:
            candidates = list(_ROOTS)
    inside = [c for c in candidates if _inside(path, c)]
    return max(inside, key=len) if inside else None


def guard(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> Path:
    """Refuse ``path`` if a component below its run folder is a symbolic link; return it.

    Args:
        path: a file or folder tlx is about to create, replace or delete (it may not exist).
        root: the run folder; by default the registered :func:`write_root` that holds it.

    Raises:
        UnsafePath: a component (the last one included) is a symbolic link, dangling or
            not, or the path leaves the run folder through ``..``.
    """
    path = Path(path)
    absolute = os.path.abspath(path)  # lexical, as the run folder's own spelling
    top = _root_of(absolute, root)
    if top is None and root is not None:
        raise UnsafePath(f"{path} is outside the run folder {root}; tlx writes only inside it")
    if top is None:
        return path  # not in a run folder this process is changing
    if os.pardir in path.parts and not _inside(os.path.realpath(path), os.path.realpath(top)):
        raise UnsafePath(f"{path} is outside the run folder {top}; tlx writes only inside it")
    here = top
    for part in absolute[len(top) :].split(os.sep):
        if not part:
            continue
        here = os.path.join(here, part)
        try:
            mode = os.lstat(here).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return path  # tlx creates the rest under a checked folder (or the OS refuses)
        if stat.S_ISLNK(mode):
            raise UnsafePath(
                f"{here} is a symbolic link (to {_target(here)}): tlx does not write through "
                f"links inside a run folder ({path}); replace the link with a real file or "
                "folder and run the command again"
            )
    return path


def _target(link: str) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"

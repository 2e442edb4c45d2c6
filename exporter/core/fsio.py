"""Atomic file writes and hashing: no run ever leaves a half-written file.

Every write goes to a temp file in the destination folder, is fsynced, then
``os.replace``d over the destination (atomic on POSIX within one filesystem). The temp file
is created 0600 (``tempfile.mkstemp``) and its mode survives the rename, so it is given the
mode a plain ``open()`` would have (0666 minus the umask: 0644 under the usual 022) first;
artifacts are shipped to servers that read them as another user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tlx-tmp-"


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success it replaces ``dest`` atomically.

    The caller writes the temp path by any means (a library's ``save(path)``). On any
    exception the temp file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    # Linux reports it without changing it; elsewhere setting it is the only way to read it.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``dest``."""
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN/Inf refused: JSON has no such values)."""
    write_text(
        dest, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n"
    )


def write_with(dest: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Atomically produce ``dest`` by calling ``writer(tmp_path)``."""
    with atomic_path(dest) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside ``dest``; on success it replaces ``dest`` whole.

    For outputs that are several files read together (a Triton model folder): readers see
    the old folder or the new one, never a mix. Every file is fsynced before the swap; on any
    exception the temp folder is removed and ``dest`` is left as it was.
    """
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    try:
        yield tmp
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f"{tmp.name}.old"
            os.replace(dest, old)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            os.replace(old, dest)  # put the previous folder back
            old = None
        raise
    finally:
        if old is not None and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()


def clean_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files and folders a killed writer left in ``folder``; return them."""
    import shutil

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed (VGG16 files are ~500 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()

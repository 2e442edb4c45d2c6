"""Atomic file writes and hashing: no run ever leaves a half-written file.

Every write goes to a temp file in the destination folder, is fsynced, then
``os.replace``d over the destination (atomic on POSIX within one filesystem). The temp file
is created 0600 (``tempfile.mkstemp``) and its mode survives the rename, so it is given the
mode a plain ``open()`` would have (0666 minus the umask: 0644 under the usual 022) first;
artifacts are shipped to servers that read them as another user.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from exporter.core.errors import DiskFull, TlxError
from exporter.core.safepath import guard

TMP_PREFIX = ".tlx-tmp-"
# A writer that fails (torch.save and onnx.save report ENOSPC without an errno) while the disk
# has less than this free is reported as a full disk.
NEARLY_FULL_BYTES = 1 << 20
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Writers that report the OS error only in their message (safetensors' SafetensorError
# "I/O error: No space left on device (os error 28)") and remove their partial file first.
_SPACE_TEXTS = tuple(os.strerror(e) for e in _SPACE_ERRNOS) + tuple(
    f"(os error {e})" for e in _SPACE_ERRNOS
)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success it replaces ``dest`` atomically.

    The caller writes the temp path by any means (a library's ``save(path)``). On any
    exception the temp file is removed and ``dest`` is left as it was; a failure for lack of
    space becomes :class:`~exporter.core.errors.DiskFull` (exit 3) with the bytes needed
    (``size_hint``, or at least what was written) and the bytes free.
    """
    dest = guard(dest)  # no link below the run folder, the destination included
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:  # mkstemp opens O_EXCL: never through a link
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=dest.suffix, dir=dest.parent)
    except OSError as exc:
        if exc.errno in _SPACE_ERRNOS:
            raise _disk_full(dest, size_hint, exc, written=0) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException as exc:
        written = _size(tmp)
        full = _is_disk_full(exc, dest.parent)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full:
            raise _disk_full(dest, size_hint, exc, written=written) from exc
        raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain, or any failure on a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _SPACE_ERRNOS:
            return True
        if any(text in str(seen) for text in _SPACE_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, (KeyboardInterrupt, SystemExit, TlxError)):
        return False  # a deliberate stop (a failed check, a signal) is not about space
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _disk_full(dest: Path, size_hint: int | None, exc: BaseException, *, written: int) -> DiskFull:
    size_hint = getattr(exc, "needed", None) or size_hint
    try:
        free = shutil.disk_usage(dest.parent).free
    except OSError:
        free = 0
    # Without a hint, what the writer got out before failing is a lower bound.
    needed = f"{size_hint}" if size_hint is not None else f"at least {written}"
    reason = "checked before writing" if isinstance(exc, _NoSpace) else exc.__class__.__name__
    return DiskFull(
        f"no space left to write {dest}: it needs {needed} bytes "
        f"and {free} bytes are free on that disk ({reason}); the previous "
        f"{dest.name}, if any, was kept. Free some space and run the command again"
    )


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


class _NoSpace(OSError):
    """Raised before writing: ``needed`` bytes will not fit (atomic_path reports DiskFull)."""

    def __init__(self, needed: int, free: int) -> None:
        super().__init__(errno.ENOSPC, f"{needed} bytes needed, {free} free")
        self.needed = needed


def require_space(folder: str | os.PathLike[str], needed: int) -> None:
    """Raise ``OSError(ENOSPC)`` before writing when ``needed`` bytes do not fit in ``folder``.

    For writers that cannot fail cleanly once started: torch's zip writer aborts the process
    on a short write to a path (``c10::Error ... unexpected pos``, exit 134, the partial file
    left behind). Inside :func:`atomic_path` this becomes DiskFull (exit 3) with the numbers.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will tell
    if needed > free:
        raise _NoSpace(needed, free)


def write_buffer(tmp: Path, data: bytes | memoryview) -> None:
    """Write an in-memory serialization (``torch.jit.save`` into ``io.BytesIO``) to the temp
    path of :func:`atomic_path`: checked against the free space first, then written by
    Python, so a full disk is an ``OSError`` (DiskFull, exit 3), never an abort."""
    require_space(tmp.parent, len(data))
    _write_file(tmp, data)


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``dest``."""
    with atomic_path(dest, size_hint=len(data)) as tmp:
        _write_file(tmp, data)


def _write_file(path: Path, data: bytes | memoryview) -> None:
    # The one place plain bytes hit the disk (tests replace it to simulate a full disk).
    with open(path, "wb") as fh:
        fh.write(data)


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``dest``."""
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN/Inf refused: JSON has no such values)."""
    write_text(
        dest, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n"
    )


def write_with(
    dest: str | os.PathLike[str], writer: Callable[[Path], None], *, size_hint: int | None = None
) -> None:
    """Atomically produce ``dest`` by calling ``writer(tmp_path)`` (``size_hint``: the bytes
    it is expected to take, for the message if the disk fills)."""
    with atomic_path(dest, size_hint=size_hint) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside ``dest``; on success it replaces ``dest`` whole.

    For outputs that are several files read together (a Triton model folder): readers see
    the old folder or the new one, never a mix. Every file is fsynced before the swap; on any
    exception the temp folder is removed and ``dest`` is left as it was.
    """
    dest = guard(dest)
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
    removed = []
    folder = guard(folder)
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

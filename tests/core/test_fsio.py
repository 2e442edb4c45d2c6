"""Atomic writes: no half-written file, and the mode a plain ``open()`` would give."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exporter.core.fsio import TMP_PREFIX, atomic_path, write_bytes, write_json, write_with


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    write_json(dest, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("writer died")
    assert json.loads(dest.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    # mkstemp creates 0600 files and os.replace keeps that mode: a server running as another
    # user could not read the artifacts. Every writer must end at 0666 & ~umask.
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_bytes(tmp_path / "b.bin", b"x")
        write_with(tmp_path / "c.txt", lambda p: p.write_text("c"))
    finally:
        os.umask(old)
    for name in ("a.json", "b.bin", "c.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_disk_full_keeps_the_old_file_and_says_needed_vs_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from exporter.core import fsio
    from exporter.core.errors import DiskFull

    dest = tmp_path / "manifest.json"
    write_json(dest, {"old": True})
    before = dest.read_bytes()

    def full_disk(path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])  # half of it fit
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsio, "_write_file", full_disk)
    payload = {"new": "x" * 10_000}
    with pytest.raises(DiskFull) as err:
        write_json(dest, payload)
    needed = len((json.dumps(payload, indent=2) + "\n").encode())
    assert f"needs {needed} bytes" in str(err.value) and "bytes are free" in str(err.value)
    assert err.value.exit_code == 3
    assert dest.read_bytes() == before  # the previous complete file
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))  # nothing half-written


def test_a_writer_failing_on_a_full_disk_without_errno_is_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.save/onnx.save report ENOSPC as a RuntimeError without errno.
    import shutil
    from collections import namedtuple

    from exporter.core.errors import DiskFull

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 0))

    def writer(p: Path) -> None:
        p.write_bytes(b"abc")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(DiskFull, match="needs at least 3 bytes and 0 bytes are free"):
        write_with(tmp_path / "w.pt", writer)
    assert not list(tmp_path.iterdir())


def test_a_writer_that_names_enospc_only_in_its_message_is_disk_full(tmp_path: Path) -> None:
    """safetensors removes its partial file and raises SafetensorError("... (os error 28)"):
    the disk then looks free again, so the message is what tells."""
    from exporter.core.errors import DiskFull

    def writer(p: Path) -> None:
        p.unlink()
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(DiskFull, match="no space left to write"):
        write_with(tmp_path / "model.safetensors", writer)
    assert not list(tmp_path.iterdir())


def test_write_buffer_refuses_before_writing_when_it_cannot_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from exporter.core import fsio
    from exporter.core.errors import DiskFull

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 90, 10))
    written: list[int] = []
    monkeypatch.setattr(fsio, "_write_file", lambda p, data: written.append(len(data)))
    with (
        pytest.raises(DiskFull, match="needs 11 bytes and 10 bytes are free"),
        fsio.atomic_path(tmp_path / "model.ts") as tmp,
    ):
        fsio.write_buffer(tmp, b"x" * 11)
    assert written == [] and not list(tmp_path.iterdir())

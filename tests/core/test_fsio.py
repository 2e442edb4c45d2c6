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

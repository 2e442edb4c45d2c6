"""The run_folder fixture's promise: a test may modify its run, in place too, without
touching any other test's run (the weights are a copy, not a link to the session's file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_SEEN: dict[str, str] = {}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_test_corrupts_its_weights_in_place(run_folder: Path) -> None:
    weights = run_folder / "model.safetensors"
    _SEEN["pristine"] = _sha(weights)
    assert weights.stat().st_nlink == 1  # its own inode
    with weights.open("r+b") as f:  # in place: the same inode
        f.write(b"\0" * 64)
    assert _sha(weights) != _SEEN["pristine"]


def test_the_next_run_folder_is_pristine(run_folder: Path) -> None:
    assert "pristine" in _SEEN  # runs after the test above (file order)
    assert _sha(run_folder / "model.safetensors") == _SEEN["pristine"]

"""``tlx predict``'s inputs: files, folders and globs → each image once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.core.errors import UsageError
from exporter.serve.images import expand_inputs


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/one.png", "a/b/two.JPG", "a/notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    os.symlink("..", tmp_path / "a" / "b" / "up")  # a loop back up the tree
    return tmp_path


def test_recursive_glob_through_a_symlink_loop_lists_each_file_once(tree: Path) -> None:
    found = expand_inputs([str(tree / "**" / "*.png"), str(tree / "**" / "*.JPG")])
    assert [p.name for p in found] == ["one.png", "two.JPG"]


def test_folder_file_and_glob_naming_the_same_image_give_it_once(tree: Path) -> None:
    one = tree / "a" / "one.png"
    found = expand_inputs([str(tree / "a"), str(one), f"{tree}/./a/one.png", str(tree / "a/*.png")])
    assert found == [tree / "a" / "b" / "two.JPG", one]  # the folder, sorted, came first


def test_spec_matching_nothing_is_a_usage_error(tree: Path) -> None:
    with pytest.raises(UsageError, match="matches no image"):
        expand_inputs([str(tree / "**" / "*.webp")])
    with pytest.raises(UsageError, match="no such file or folder"):
        expand_inputs([str(tree / "missing.png")])

"""``tlx predict``'s inputs: files, folders and globs → each image once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.core.errors import UsageError
from exporter.core.preprocess import size_problem
from exporter.serve.images import BadImage, expand_inputs, open_image


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


# --- inputs that used to hang or explode (each ends within seconds) -------------------------


@pytest.mark.timeout(30)
def test_two_links_back_up_the_tree_end_quickly_and_list_each_file_once(tmp_path: Path) -> None:
    # glob's own "**" followed d/s1 and d/s2 (both -> .) until the path was too long: 2^40 paths.
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for rel in ("a.png", "sub/b.png"):
        (d / rel).write_bytes(b"x")
    os.symlink(".", d / "s1")
    os.symlink(".", d / "s2")
    assert [p.name for p in expand_inputs([f"{d}/**/*.png"])] == ["a.png", "b.png"]
    assert [p.name for p in expand_inputs([str(d)])] == ["a.png", "b.png"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert [str(p) for p in expand_inputs(["**/*.png"])] == ["d/a.png", "d/sub/b.png"]
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("spec", ["", "a\0b"])
def test_an_empty_argument_is_refused_not_the_current_folder(spec: str) -> None:
    with pytest.raises(UsageError, match="not an image path"):
        expand_inputs([spec])


@pytest.mark.timeout(30)
def test_a_fifo_or_device_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    bad = open_image(fifo)
    assert isinstance(bad, BadImage) and bad.line() == f"{fifo}: is a FIFO, not an image file"
    bad = open_image("/dev/zero")
    assert isinstance(bad, BadImage) and "is a device" in bad.reason
    (tmp_path / "ok.png").write_bytes(b"x")
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "ok.png"]  # the FIFO is no image


def test_aspect_ratio_limit() -> None:
    assert size_problem(100, 1) is None and size_problem(3200, 32) is None
    assert "aspect ratio is above 100:1" in (size_problem(101, 1) or "")
    assert "aspect ratio" in (size_problem(1, 1_000_000) or "")
    assert "empty" in (size_problem(0, 5) or "")


_PEAK = """
import resource, sys
import numpy as np
from PIL import Image
from exporter.core.preprocess import Preprocessing
from exporter.serve.images import BadImage, open_image

tf = Preprocessing(image_size=32).eval_transform()
def run(path):
    img = open_image(path)
    if not isinstance(img, BadImage):
        tf(img)
    return img
run(sys.argv[1])  # a normal image: imports and first-call buffers
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = [run(p) for p in sys.argv[2:]]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) // 1024)
for o in out:
    print(o.line() if isinstance(o, BadImage) else "ok")
"""


@pytest.mark.timeout(300)
def test_extreme_aspect_images_cost_no_more_memory_than_a_normal_one(tmp_path: Path) -> None:
    """A 2,986-byte 1,000,000x1 PNG once peaked at 5.9 GB (resized to 32,000,000x32)."""
    import subprocess
    import sys

    from PIL import Image

    paths = []
    for name, size in (("normal.png", (640, 480)), ("wide.png", (1_000_000, 1))):
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    Image.new("L", (1, 100_000), 7).save(tmp_path / "tall.png")
    Image.new("RGB", (3200, 32), 9).save(tmp_path / "wide-ok.png")  # 100:1 is allowed
    paths += [str(tmp_path / "tall.png"), str(tmp_path / "wide-ok.png")]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, *paths], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert int(out[0]) < 200, out  # MB above the normal image's peak
    assert out[1].startswith(f"{paths[1]}: 1000000x1 px: the aspect ratio is above 100:1"), out
    assert out[2].startswith(f"{paths[2]}: 1x100000 px: the aspect ratio"), out
    assert out[3] == "ok", out

"""Degenerate image folders: each is one UsageError (exit 2) naming the folder or class."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from exporter.core.config import DataConfig
from exporter.core.errors import UsageError
from exporter.data.datasets import build_datasets


def _folder(root: Path, files: dict[str, bytes | None]) -> Path:
    """``files``: relative path → bytes (None: a small valid PNG)."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            Image.new("RGB", (8, 8), "red").save(p)
        else:
            p.write_bytes(content)
    return root


def _build(root: Path) -> None:
    build_datasets(DataConfig(source="imagefolder", data_dir=str(root), image_size=32))


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path, {"train/cat/0.png": None, "val/cat/0.png": None})
    with pytest.raises(UsageError, match=r"1 class folder \(cat\).*at least 2 classes"):
        _build(tmp_path)


def test_a_class_without_training_images_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path, {"train/cat/0.png": None, "val/cat/0.png": None, "val/dog/0.png": None})
    (tmp_path / "train/dog").mkdir()
    with pytest.raises(UsageError, match=r"train/dog has no readable training image"):
        _build(tmp_path)


def test_a_class_whose_only_training_image_is_unreadable_is_refused(tmp_path: Path) -> None:
    files = {"train/cat/0.png": None, "train/dog/0.png": b"\x89PNG broken"}
    files |= {"val/cat/0.png": None, "val/dog/0.png": None}
    _folder(tmp_path, files)
    with pytest.warns(UserWarning), pytest.raises(UsageError, match=r"train/dog has no readable"):
        _build(tmp_path)


def test_a_split_without_readable_images_is_refused(tmp_path: Path) -> None:
    files = {"train/cat/0.png": None, "train/dog/0.png": None}
    files |= {"val/cat/0.png": b"broken", "val/dog/0.png": b""}
    _folder(tmp_path, files)
    with pytest.warns(UserWarning), pytest.raises(UsageError, match=r"val has no readable images"):
        _build(tmp_path)


def test_class_names_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    files = {f"{s}/{c}/0.png": None for s in ("train", "val") for c in ("Cat", "cat", "dog")}
    _folder(tmp_path, files)
    with pytest.raises(UsageError, match=r"'Cat' and 'cat' that differ only in case"):
        _build(tmp_path)


def test_a_val_class_without_images_is_allowed(tmp_path: Path) -> None:
    # Only training needs every class; a class absent from val is scored as absent.
    files = {"train/cat/0.png": None, "train/dog/0.png": None, "val/cat/0.png": None}
    _folder(tmp_path, files)
    (tmp_path / "val/dog").mkdir()
    bundle = build_datasets(DataConfig(source="imagefolder", data_dir=str(tmp_path), image_size=32))
    assert bundle.class_names == ["cat", "dog"] and len(bundle.val) == 1


@pytest.mark.parametrize("size", [8, 31, 1025, 100000])
def test_image_size_out_of_bounds_is_refused(size: int) -> None:
    with pytest.raises(UsageError, match=f"--image-size {size}"):
        build_datasets(DataConfig(source="synthetic", train_size=2, val_size=2, image_size=size))

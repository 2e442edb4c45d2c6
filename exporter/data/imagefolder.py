"""Image folders (``ROOT/train/<class>/*``, ``ROOT/val/<class>/*``): scanning and validation.

Class names come from folder names; images are found in subfolders too (as torchvision's
``ImageFolder``), hidden files and folders are skipped, every image is fully decoded once so
a bad file is found before training (skipped with a warning, or an error with ``strict``).

A folder that cannot train a classifier is refused with one line naming it (exit 2): fewer
than two classes, two class folders whose names differ only in case (they collide on
case-insensitive filesystems and in every export's class list), a class with no readable
training image (it could never be predicted), a split with no readable image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.errors import InputFileError, UsageError
from exporter.core.preprocess import size_problem, to_rgb

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
MIN_CLASSES = 2


class SkippedImageWarning(UserWarning):
    """An unreadable image was left out of the dataset (strict mode turns it into an error)."""


@dataclass
class FileDataset:
    """Images read from files on demand (imagefolder); only files that decoded are listed."""

    paths: list[Path]
    labels: np.ndarray
    transform: Callable[[Any], Any] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = open_rgb(self.paths[i])
        return (self.transform(img) if self.transform else img), int(self.labels[i])


def imagefolder_root(data_dir: str | os.PathLike[str]) -> Path:
    """``--data-dir`` checked: a folder with ``train/`` and ``val/``."""
    root = Path(str(data_dir)).expanduser()
    if not root.is_dir():
        raise InputFileError(f"--data-dir {root} does not exist or is not a folder")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise InputFileError(
                f"--data-dir {root} has no {split}/ folder: expected {root}/train/<class>/* "
                f"and {root}/val/<class>/*"
            )
    return root


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def imagefolder_classes(root: Path) -> list[str]:
    """The class names (sorted folder names), the same in ``train/`` and ``val/``.

    Raises:
        UsageError: no or one class, names differing only in case, train/val mismatch.
    """
    train, val = _class_dirs(root / "train"), _class_dirs(root / "val")
    if not train:
        raise UsageError(
            f"{root / 'train'} has no class folders: put images in {root}/train/<class>/"
        )
    for split, names in (("train", train), ("val", val)):
        _refuse_case_duplicates(root / split, names)
    if train != val:
        only_train = sorted(set(train) - set(val))[:5]
        only_val = sorted(set(val) - set(train))[:5]
        raise UsageError(
            f"{root}: train/ and val/ must have the same class folders (only in train: "
            f"{only_train}, only in val: {only_val})"
        )
    if len(train) < MIN_CLASSES:
        raise UsageError(
            f"{root / 'train'} has {len(train)} class folder ({train[0]}): a classifier needs "
            f"at least {MIN_CLASSES} classes"
        )
    return train


def _refuse_case_duplicates(folder: Path, names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise UsageError(
                f"{folder} has class folders {other!r} and {name!r} that differ only in case: "
                "merge or rename one (they collide on case-insensitive filesystems)"
            )


def imagefolder_split(
    folder: Path, classes: list[str], *, strict: bool, skipped: list[dict[str, str]]
) -> FileDataset:
    """The readable images of one split; unreadable ones go to ``skipped`` (or raise).

    Raises:
        UsageError: the split has no readable image, or (``train``) a class has none.
        InputFileError: an unreadable image with ``strict``.
    """
    paths: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        found = [p for p in _image_files(folder / name) if _usable(p, strict, skipped)]
        if not found:
            empty.append(name)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise UsageError(
            f"{folder} has no readable images (extensions {', '.join(IMG_EXTENSIONS)}) in its "
            "class folders"
        )
    if empty and folder.name == "train":
        raise UsageError(
            f"{folder / empty[0]} has no readable training image"
            + (f" (nor {len(empty) - 1} other class folder(s))" if len(empty) > 1 else "")
            + ": every class needs at least one, or remove the folder from train/ and val/"
        )
    return FileDataset(paths, np.asarray(labels, dtype=np.int64))


def _usable(path: Path, strict: bool, skipped: list[dict[str, str]]) -> bool:
    reason = _check_image(path)
    if reason is None:
        return True
    if strict:
        raise InputFileError(
            f"unreadable image {path}: {reason} (remove it, or drop --strict to skip such "
            "files with a warning)"
        )
    skipped.append({"path": str(path), "reason": reason})
    warnings.warn(f"skipped unreadable image {path}: {reason}", SkippedImageWarning, stacklevel=4)
    return False


def _image_files(class_dir: Path) -> list[Path]:
    """Image files under one class folder, subfolders included (as torchvision's ImageFolder),
    hidden files and folders skipped, in a stable sorted order. Symlinked folders are not
    followed (a link cycle would never end); symlinked files are."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            path = Path(dirpath) / fname
            wanted = not fname.startswith(".") and path.suffix.lower() in IMG_EXTENSIONS
            if wanted and path.is_file():  # is_file: a dangling symlink is not an image
                found.append(path)
    return sorted(found)


def _check_image(path: Path) -> str | None:
    """Fully decode ``path``; return why it cannot be used, or None if it is fine."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        open_rgb(path)
    except InputFileError as exc:
        return str(exc.__cause__ or exc)
    except OSError as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


def open_rgb(path: Path) -> Any:
    """Decode an image file to RGB; a corrupt, truncated, decompression-bomb, empty, too
    elongated (above ``MAX_ASPECT_RATIO``) or non-finite (NaN/Inf) image raises.

    Pillow's bomb limit stays on: its warning (over the limit) is raised as an error too,
    so such a file is handled like any other unreadable image.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                problem = size_problem(im.width, im.height)  # from the header, before decoding
                if problem is not None:
                    raise ValueError(problem)
                im.load()
                return to_rgb(im)  # a NaN/Inf float image raises ValueError here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputFileError(f"cannot decode image {path}: {exc}") from exc
    except Image.DecompressionBombWarning as exc:
        raise InputFileError(f"cannot decode image {path}: {exc}") from exc

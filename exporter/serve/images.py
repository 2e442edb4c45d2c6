"""Image inputs of ``tlx predict``: files, folders and globs → paths; a path → a decoded image.

Decoding errors are values, not exceptions, so one unreadable file never stops the others.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from PIL import Image

# What PIL decodes and image folders usually hold; a folder's other files are ignored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
GLOB_CHARS = set("*?[")
# PIL's own decompression-bomb limit is a warning below 2x; treat anything above as bad.
MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class BadImage:
    """A file that could not be used, with a one-line reason."""

    source: str
    reason: str

    def line(self) -> str:
        return f"{self.source}: {self.reason}"


def expand_inputs(specs: Iterable[str | Path]) -> list[Path]:
    """Files, folders (recursively, image suffixes only) and globs → paths, in order, each
    file once (by its real path).

    A file named explicitly is kept whatever its suffix (its decoding decides); a spec that
    matches nothing is a usage error naming it.

    Raises:
        UsageError: a spec matches no file, or nothing was given.
    """
    out: dict[str, Path] = {}  # real path -> the first spelling met
    specs = list(specs)
    if not specs:
        raise UsageError("no images given: pass image files, folders or globs")
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.exists() or path.is_symlink():
            found = [path]
        elif GLOB_CHARS & set(text):
            found = sorted(
                Path(p)
                for p in glob.glob(text, recursive=True)
                if Path(p).is_file() and (Path(p).suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            raise UsageError(f"{text!r}: no such file or folder")
        if not found:
            what = "folder" if path.is_dir() else "pattern"
            raise UsageError(f"{text!r}: the {what} matches no image ({', '.join(IMAGE_SUFFIXES)})")
        for p in found:
            # By real path: a glob's "**" follows symlinked folders, so a link back up the
            # tree (or two spellings of one file) would otherwise classify a file many times.
            out.setdefault(os.path.realpath(p), p)
    return list(out.values())


def open_image(path: str | Path) -> Image.Image | BadImage:
    """Decode ``path`` fully (truncated files fail here, not later) or say why not."""
    from PIL import Image, UnidentifiedImageError

    source = str(path)
    p = Path(path)
    if p.is_dir():
        return BadImage(source, "is a folder, not an image")
    try:
        with Image.open(p) as img:
            if img.width * img.height > MAX_PIXELS:
                return BadImage(
                    source, f"{img.width}x{img.height} px is above the {MAX_PIXELS} px limit"
                )
            img.load()
            return img.copy()
    except UnidentifiedImageError:
        return BadImage(source, "not an image PIL can read (unknown or corrupt format)")
    except FileNotFoundError:
        return BadImage(source, "no such file")
    except PermissionError:
        return BadImage(source, "permission denied")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Truncated data, bad headers (PIL raises SyntaxError for some), bombs.
        text = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        return BadImage(source, f"cannot decode: {text}")

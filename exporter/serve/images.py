"""Image inputs of ``tlx predict``: files, folders and globs → paths; a path → a decoded image.

Decoding errors are values, not exceptions, so one unreadable file never stops the others.
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.errors import UsageError
from exporter.core.preprocess import finite_problem, size_problem

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

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
    matches nothing is a usage error naming it. Folders and ``**`` never descend into a
    symlinked folder: two links back up the tree (``d/s1 -> .``, ``d/s2 -> .``) would
    otherwise make the number of paths grow exponentially with the depth.

    Raises:
        UsageError: a spec matches no file, a spec is empty, or nothing was given.
    """
    out: dict[str, Path] = {}  # real path -> the first spelling met
    specs = list(specs)
    if not specs:
        raise UsageError("no images given: pass image files, folders or globs")
    for spec in specs:
        text = str(spec)
        if not text or "\0" in text:
            # Path("") is ".", so an empty argument (an unset shell variable) would
            # classify the whole current folder.
            raise UsageError(f"{text!r}: not an image path (to use the current folder, pass '.')")
        path = Path(text)
        if path.is_dir():
            found = sorted(_images_under(path))
        elif path.exists() or path.is_symlink():
            found = [path]
        elif GLOB_CHARS & set(text):
            found = sorted(
                Path(p)
                for p in _glob(text)
                if Path(p).is_file() and (Path(p).suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            raise UsageError(f"{text!r}: no such file or folder")
        if not found:
            what = "folder" if path.is_dir() else "pattern"
            raise UsageError(f"{text!r}: the {what} matches no image ({', '.join(IMAGE_SUFFIXES)})")
        for p in found:
            # By real path: two spellings of one file (or a symlinked file) count once.
            out.setdefault(os.path.realpath(p), p)
    return list(out.values())


def _images_under(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` (symlinked files kept, symlinked folders not entered)."""
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():  # not a FIFO, socket, ...
                yield p
        # os.walk lists a symlinked folder among the dirnames but never walks into it.


def _glob(pattern: str) -> Iterator[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not descend into
    symlinked folders (glob's own ``**`` follows them until the path is too long)."""
    head, sep, tail = pattern.partition(os.sep + "**" + os.sep)
    if not sep and pattern.endswith(os.sep + "**"):
        head, sep, tail = pattern[: -len(os.sep + "**")], os.sep, ""
    if not sep and pattern.startswith("**" + os.sep):
        head, sep, tail = "", os.sep, pattern[len("**" + os.sep) :]
    if not sep:
        yield from glob.glob(pattern)  # no "**": each part expands one level only
        return
    for base in glob.glob(head) if GLOB_CHARS & set(head) else [head]:
        if not os.path.isdir(base or "."):
            continue
        for dirpath, dirnames, _ in os.walk(base or ".", followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # as glob's "**"
            if not base:  # a relative "**/x": paths spelled as glob spells them, no "./"
                dirpath = "" if dirpath == "." else os.path.relpath(dirpath)
            yield from _glob(os.path.join(glob.escape(dirpath), tail or "*"))


def _kind(target: str | Path | int) -> str | None:
    """Why ``target`` (a path or an open descriptor) is no image file, or None for a regular
    file. A FIFO, socket or device would block the decoder or never end."""
    mode = os.stat(target).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not an image"
    what = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return f"is {what}, not an image file"


def open_image(path: str | Path) -> Image.Image | BadImage:
    """Decode ``path`` fully (truncated files fail here, not later) or say why not: a
    non-regular file (FIFO, socket, device), an image above ``MAX_PIXELS``, an empty or too
    elongated one (``MAX_ASPECT_RATIO``, checked before decoding), NaN/Inf pixels."""
    source = str(path)
    try:
        kind = _kind(path)
        if kind is not None:
            return BadImage(source, kind)
        # O_NONBLOCK: a FIFO swapped in after the stat still cannot block the open; fstat on
        # the descriptor then sees what was really opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            kind = _kind(fh.fileno())
            if kind is not None:
                return BadImage(source, kind)
            return _decode_stream(fh, source)
    except FileNotFoundError:
        return BadImage(source, "no such file")
    except PermissionError:
        return BadImage(source, "permission denied")
    except Exception as exc:
        return _bad_decode(source, exc)


def decode_bytes(data: bytes, source: str) -> Image.Image | BadImage:
    """:func:`open_image`'s decoding and checks for an image already read (a URI's bytes)."""
    import io

    try:
        return _decode_stream(io.BytesIO(data), source)
    except Exception as exc:
        return _bad_decode(source, exc)


def _decode_stream(fh: Any, source: str) -> Image.Image | BadImage:
    from PIL import Image

    with Image.open(fh) as img:
        if img.width * img.height > MAX_PIXELS:
            return BadImage(
                source, f"{img.width}x{img.height} px is above the {MAX_PIXELS} px limit"
            )
        problem = size_problem(img.width, img.height)  # from the header, before decoding
        if problem is not None:
            return BadImage(source, problem)
        img.load()
        problem = finite_problem(img)
        if problem is not None:
            return BadImage(source, problem)
        return img.copy()


def _bad_decode(source: str, exc: Exception) -> BadImage:
    """A decoding error as a reason; anything else is raised again."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return BadImage(source, "not an image PIL can read (unknown or corrupt format)")
    if isinstance(exc, OSError | ValueError | SyntaxError | Image.DecompressionBombError):
        # Truncated data, bad headers (PIL raises SyntaxError for some), bombs.
        text = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        return BadImage(source, f"cannot decode: {text}")
    raise exc

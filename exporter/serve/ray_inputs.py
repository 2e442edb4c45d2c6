"""``--engine ray``'s inputs: files, folders and globs as ``tlx predict``, plus list files.

An input that is an existing file ending in ``.txt`` is a list: one path, folder, glob or URI
per line (blank lines and ``#`` comments skipped). A URI (``file://``, ``s3://``, ``gs://``,
``http(s)://``: any scheme fsspec knows, with its filesystem package installed) is read by
the actor with fsspec and decoded with the checks of :func:`open_image`; paths are read from
the file system every node sees, as in-process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.errors import UsageError
from exporter.serve.images import BadImage, decode_bytes, expand_inputs

if TYPE_CHECKING:
    from PIL import Image

LIST_SUFFIX = ".txt"
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A URI is read whole into memory before decoding: refuse what no image here needs.
MAX_URI_BYTES = 256 * 2**20


def is_uri(text: str) -> bool:
    return bool(URI.match(text))


def ray_inputs(specs: Sequence[str | Path]) -> list[tuple[str, str]]:
    """``(source, location)`` per image, in order, each once: ``source`` as the user spelt it,
    ``location`` what an actor reads (an absolute path: a worker's working folder is not the
    driver's; or the URI itself).

    Raises:
        UsageError: a list file that cannot be read or lists nothing; a spec that matches no
            file (as :func:`expand_inputs`).
    """
    flat: list[str] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.suffix.lower() == LIST_SUFFIX and path.is_file():
            flat += _read_list(path)
        else:
            flat.append(text)
    out: dict[str, tuple[str, str]] = {}  # location -> entry: each image once
    local: list[str] = []

    def flush() -> None:
        for p in expand_inputs(local) if local else []:
            out.setdefault(str(p.resolve()), (str(p), str(p.resolve())))
        local.clear()

    for text in flat:
        if is_uri(text):
            flush()  # keep the input order across paths and URIs
            out.setdefault(text, (text, text))
        else:
            local.append(text)
    flush()
    return list(out.values())


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{str(path)!r}: cannot read the list of images: {exc}") from exc
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not entries:
        raise UsageError(f"{str(path)!r}: the list names no image (one path or URI per line)")
    return entries


def read_uri(uri: str) -> Image.Image | BadImage:
    """The image at ``uri`` (read with fsspec), or why not."""
    try:
        import fsspec

        with fsspec.open(uri, "rb") as fh:
            data = fh.read(MAX_URI_BYTES + 1)
    except ImportError as exc:  # the scheme's filesystem package (s3fs, gcsfs, aiohttp...)
        return BadImage(uri, f"cannot open: {exc.name or exc} is not installed")
    except Exception as exc:  # any failure of the transport is this image's, not the job's
        text = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        return BadImage(uri, f"cannot read: {text}")
    if len(data) > MAX_URI_BYTES:
        return BadImage(uri, f"larger than {MAX_URI_BYTES // 2**20} MiB")
    return decode_bytes(data, uri)

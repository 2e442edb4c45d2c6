"""Checks an untrusted ``.onnx`` file must pass before onnx or ONNX Runtime opens it.

ONNX external-data path traversal was fixed three times upstream (CVE-2022-25882,
CVE-2024-27318, CVE-2026-27489/34446/34447), so tlx checks containment itself instead of
trusting the installed version: every external tensor must live in a regular file inside
the model's own folder, reached without ``..``, absolute paths, symlinks or hard links.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from exporter.core.errors import InputFileError

if TYPE_CHECKING:
    import onnx


def check_onnx_file(path: Path) -> None:
    """Parse the ``.onnx`` file ``path`` without external data and check every external-data
    location.

    Raises:
        InputFileError: missing, empty, not ONNX (truncated or corrupt), or an external-data
            location that is absolute, contains ``..``, goes through a symlink, is a hard
            link, or is not a regular file inside the model's folder.
    """
    path = Path(path)
    model = load_onnx_graph(path)
    for location in external_locations(model):
        _check_external_location(path, location)


def load_onnx_graph(path: Path) -> onnx.ModelProto:
    """``onnx.load`` without external data; any parse failure is an InputFileError."""
    import onnx

    path = Path(path)
    if path.is_symlink():
        raise InputFileError(f"{path} is a symbolic link; pass the model file itself")
    if not path.is_file():
        raise InputFileError(f"ONNX file {path} not found")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty (0 bytes): not a valid ONNX model; re-export it")

    def corrupt(why: str) -> InputFileError:
        return InputFileError(
            f"{path} is not a valid ONNX model (truncated or corrupt: {why}); re-export it "
            "with `tlx export RUN --format onnx --force`"
        )

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ValueError, ...
        raise corrupt(exc.__class__.__name__) from exc
    # protobuf happily parses many garbage byte strings into an empty message.
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise corrupt("empty graph")
    return model


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph, including those in subgraphs and Constant attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    import onnx

    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _tensors(g)


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The ``location`` of every tensor stored as external data (in file order, unique)."""
    import onnx

    seen: dict[str, None] = {}
    tensors = [*_tensors(model.graph)]
    for func in model.functions:  # local functions may hold Constant tensors too
        tensors.extend(_node_tensors(func.node))
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in t.external_data}
            seen.setdefault(entries.get("location", ""), None)
    return list(seen)


def _check_external_location(model_path: Path, location: str) -> None:
    """Require one external-data ``location`` to be a plain file in the model's folder."""

    def bad(why: str) -> InputFileError:
        return InputFileError(
            f"{model_path}: external data location {location!r} {why}; tlx only loads external "
            "data stored as a regular file in the model's own folder"
        )

    if not location:
        raise bad("is empty")
    if "\x00" in location:
        raise bad("contains a NUL byte")
    # Check both path flavours: "C:\\x" or "\\\\server\\share" are absolute on Windows.
    for flavour in (PurePosixPath, PureWindowsPath):
        p = flavour(location)
        if p.is_absolute() or p.anchor:
            raise bad("is an absolute path")
        if ".." in p.parts:
            raise bad("contains '..'")
    folder = model_path.parent
    candidate = folder
    for part in PurePosixPath(location.replace("\\", "/")).parts:
        candidate = candidate / part
        if candidate.is_symlink():
            raise bad(f"goes through a symbolic link ({candidate})")
    try:
        st = os.lstat(candidate)
    except OSError:
        raise bad("does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise bad("is not a regular file")
    if st.st_nlink > 1:
        raise bad(f"is a hard link ({st.st_nlink} links)")
    if not candidate.resolve().is_relative_to(folder.resolve()):
        raise bad("resolves outside the model's folder")

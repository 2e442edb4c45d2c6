"""manifest.json: every shipped file with its sha256 and size, plus the shared metadata.

Artifacts are untrusted input: TorchScript and .pt2 loading can execute code, so nothing
listed here is loaded before :func:`check_file` has matched its hash.

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "source": {"file": "model.safetensors", "sha256": "...", "bytes": N},
      "metadata": {...class names, preprocessing, versions, dataset, best accuracy...},
      "artifacts": {
        "model.onnx": {
          "format": "onnx", "precision": "fp32", "variant": null,
          "files": [{"path": "model.onnx", "sha256": "...", "bytes": N}],
          "inputs": [{"name": "input", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
          "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
          "input_constraints": {"fixed_hw": [32, 32]} | {},
          ...format-specific fields (opset, exporter, export_time_s, exported_at)
        }
      }
    }
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from exporter.core.errors import InputFileError, IntegrityError
from exporter.core.fsio import sha256_file, write_json
from exporter.core.runlock import run_lock

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FileRecord:
    """One file on disk that belongs to an artifact."""

    path: str  # relative to the run folder, no '..'
    sha256: str
    bytes: int

    @classmethod
    def of(cls, run_dir: Path, rel: str) -> FileRecord:
        p = run_dir / rel
        return cls(rel, sha256_file(p), p.stat().st_size)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class ArtifactEntry:
    """One shipped artifact (a model file, possibly with companion files)."""

    name: str
    format: str
    files: list[FileRecord]
    precision: str = "fp32"
    variant: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    input_constraints: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The main file (the one a runtime opens)."""
        return self.files[0].path

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "precision": self.precision,
            "variant": self.variant,
            "files": [f.to_dict() for f in self.files],
            "inputs": self.inputs,
            "outputs": self.outputs,
            "input_constraints": self.input_constraints,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ArtifactEntry:
        known = {f.name for f in fields(cls)} - {"name", "extra"}
        files = [
            FileRecord(_safe_rel(str(f["path"])), str(f["sha256"]), int(f["bytes"]))
            for f in d["files"]
        ]
        if not files:
            raise ValueError(f"artifact {name} lists no files")
        return cls(
            name=name,
            format=str(d["format"]),
            files=files,
            precision=str(d.get("precision", "fp32")),
            variant=d.get("variant"),
            inputs=list(d.get("inputs", [])),
            outputs=list(d.get("outputs", [])),
            input_constraints=dict(d.get("input_constraints") or {}),
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class Manifest:
    """The parsed manifest of one run folder."""

    source: FileRecord
    metadata: dict[str, Any]
    artifacts: dict[str, ArtifactEntry] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "source": {
                "file": self.source.path,
                **{k: v for k, v in self.source.to_dict().items() if k != "path"},
            },
            "metadata": self.metadata,
            "artifacts": {name: a.to_dict() for name, a in self.artifacts.items()},
        }


def _safe_rel(rel: str) -> str:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"file path {rel!r} must stay inside the run folder")
    return rel


def manifest_path(run_dir: Path) -> Path:
    return Path(run_dir) / MANIFEST_NAME


def load_manifest(run_dir: Path) -> Manifest:
    """Read and validate ``RUN/manifest.json``.

    Raises:
        InputFileError: missing (run ``tlx export`` first), unreadable, or malformed.
    """
    path = manifest_path(run_dir)
    if not path.is_file():
        raise InputFileError(f"{path} not found: run `tlx export {run_dir}` first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        src = raw["source"]
        source = FileRecord(_safe_rel(str(src["file"])), str(src["sha256"]), int(src["bytes"]))
        artifacts = {
            name: ArtifactEntry.from_dict(_safe_rel(name), entry)
            for name, entry in dict(raw.get("artifacts", {})).items()
        }
        return Manifest(source=source, metadata=dict(raw.get("metadata", {})), artifacts=artifacts)
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:  # JSON: ValueError
        raise InputFileError(f"{path} is malformed: {exc}") from exc


def save_manifest(run_dir: Path, manifest: Manifest) -> Path:
    """Atomically write ``RUN/manifest.json`` under the run's lock.

    The lock is re-entrant: a command that holds it for its whole read-modify-write (export,
    optimize) saves without waiting; a caller that did not take it still cannot interleave
    with a locked command's save. For a read-modify-write of your own, use
    :meth:`~exporter.core.runfolder.Run.edit_manifest`.
    """
    path = manifest_path(run_dir)
    with run_lock(run_dir, "manifest"):
        write_json(path, manifest.to_dict())
    return path


def check_file(
    run_dir: Path, record: FileRecord, *, sha256: Callable[[Path], str] | None = None
) -> Path:
    """Return the file's path after its size and sha256 match ``record``.

    Args:
        sha256: how to hash the file (default: read it all); an opened run passes its own,
            which hashes each file once per command (``Run.check_file``).

    Raises:
        IntegrityError: the file is missing, a symlink, or its bytes differ from the manifest.
    """
    path = Path(run_dir) / record.path
    if path.is_symlink():
        raise IntegrityError(f"{path} is a symbolic link; tlx loads only regular files it hashed")
    if not path.is_file():
        raise IntegrityError(f"{path} is listed in the manifest but missing")
    hasher = sha256 if sha256 is not None else sha256_file
    if path.stat().st_size != record.bytes or hasher(path) != record.sha256:
        raise IntegrityError(
            f"{path} does not match manifest.json (sha256/size differ): the file changed after "
            "export. Re-export with `tlx export RUN --force` or restore the original file."
        )
    return path


def check_artifact(run_dir: Path, entry: ArtifactEntry) -> Path:
    """Check every file of an artifact; return the main file's path."""
    for rec in entry.files:
        check_file(run_dir, rec)
    return Path(run_dir) / entry.path

"""The run folder: one run is one folder, the contract between the commands.

``tlx train`` creates it; ``export``, ``verify`` and ``bench`` read it and add to it. A
command opens it once (:func:`open_run` → :class:`Run`) and passes the object down: the
object reads ``train.json`` once, the manifest once (again only after a write of its own or
another process's), and hashes each file once per command.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core import fsio
from exporter.core.errors import InputFileError
from exporter.core.manifest import (
    FileRecord,
    Manifest,
    check_file,
    load_manifest,
    manifest_path,
)
from exporter.core.manifest import save_manifest as _save_manifest
from exporter.core.preprocess import Preprocessing
from exporter.core.runlock import run_lock

# A file's identity for the caches: replaced (new inode), rewritten (size, mtime) or
# re-linked/chmod-ed (ctime) files are read again.
_FileKey = tuple[str, int, int, int, int, int]

# Every file name of the run folder, defined here once (``manifest.json``: core/manifest.py).
# Stages import them from here; tests/test_layout.py checks no other module spells them.
WEIGHTS_NAME = "model.safetensors"
TRAIN_JSON = "train.json"
CHECKPOINT_DIR = "checkpoint"
CURVES_PNG = "curves.png"
LR_FIND_PNG = "lr_find.png"
EXPORT_JSON = "export.json"
OPTIMIZE_JSON = "optimize.json"
OPTIMIZE_MD = "optimize.md"
OPTIMIZE_PNG = "optimize.png"
VERIFY_JSON = "verify.json"
VERIFY_MD = "verify.md"
VERIFY_SERVER_JSON = "verify-server.json"
VERIFY_SERVER_MD = "verify-server.md"
BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BENCH_CSV = "bench.csv"
BENCH_PNG = "bench.png"
BENCH_PROFILE_PNG = "bench-profile.png"
LOADTEST_JSON = "loadtest.json"
LOADTEST_MD = "loadtest.md"
LOADTEST_CSV = "loadtest.csv"
LOADTEST_PNG = "loadtest.png"
TUNE_JSON = "tune.json"
DEPLOY_JSON = "deploy.json"
DEMO_JSON = "demo.json"
SIGNATURE_NAME = "model.sig"
PROVENANCE_JSON = "provenance.json"
MODEL_CARD_MD = "MODEL_CARD.md"
CONFUSION_PNG = "confusion_matrix.png"


def file_key(path: Path) -> _FileKey:
    """A file's identity for the caches (path, device, inode, size, mtime, ctime)."""
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _RunState:
    """What one command learned about a run: mutable, so it lives beside the frozen facts."""

    manifest: tuple[_FileKey, Manifest] | None = None
    hashes: dict[_FileKey, str] = field(default_factory=dict)
    onnx_checked: set[tuple[_FileKey, ...]] = field(default_factory=set)


@dataclass(frozen=True, eq=False)
class Run:
    """An opened run for one command: ``train.json``'s facts, the manifest, verified files.

    It is an ``os.PathLike`` of its folder, so code that takes a path (the run lock,
    ``Path(run)``) takes it too. The caches belong to the object: a new command (a new
    :func:`open_run`) reads and hashes afresh.
    """

    run_dir: Path
    record: dict[str, Any]  # train.json, validated
    class_names: list[str]
    preprocessing: Preprocessing
    _state: _RunState = field(default_factory=_RunState, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def weights_path(self) -> Path:
        return self.run_dir / WEIGHTS_NAME

    @property
    def data_config(self) -> dict[str, Any]:
        """The data section of the training config (source, folder, seed, sizes)."""
        return dict(self.record.get("config", {}).get("data", {}))

    @property
    def best_val_accuracy(self) -> float | None:
        best = self.record.get("best") or {}
        return best.get("val_accuracy")

    def __fspath__(self) -> str:
        return os.fspath(self.run_dir)

    def __str__(self) -> str:  # messages name the folder, as they did for a path
        return str(self.run_dir)

    # --- the manifest ---------------------------------------------------------------------

    @property
    def has_manifest(self) -> bool:
        return manifest_path(self.run_dir).is_file()

    @property
    def manifest(self) -> Manifest:
        """A copy of ``manifest.json`` (parsed once; again only when the file was replaced).

        Raises:
            InputFileError: missing (run ``tlx export`` first), unreadable, or malformed.
        """
        cached = self._state.manifest
        try:
            key = file_key(manifest_path(self.run_dir))
        except OSError:
            key = None
        if cached is None or key is None or cached[0] != key:
            self._state.manifest = None
            manifest = load_manifest(self.run_dir)  # raises the usual message when missing
            self._state.manifest = None if key is None else (key, manifest)
            return copy.deepcopy(manifest)
        return copy.deepcopy(cached[1])

    def save_manifest(self, manifest: Manifest) -> Path:
        """Write the manifest (under the run's lock) and remember what was written."""
        path = _save_manifest(self.run_dir, manifest)
        self._remember(manifest)
        return path

    @contextlib.contextmanager
    def edit_manifest(self) -> Iterator[Manifest]:
        """Lock the run, read its manifest, yield it, save it.

        Nothing is saved when the block raises. The read happens under the lock, so an update a
        concurrent command saved a moment ago is in what you change, not lost.
        """
        with run_lock(self.run_dir, "manifest"):
            self._state.manifest = None  # read afresh, whatever this object saw before
            manifest = self.manifest
            yield manifest
            self.save_manifest(manifest)

    def manifest_to_extend(self, *, force: bool = False) -> tuple[Manifest, list[str]]:
        """The manifest a stage adds artifacts to, and the entries it dropped as stale.

        The one rule for stale weights: an entry made from weights whose sha256 is not
        ``model.safetensors``' now would silently disagree with the model every later stage
        rebuilds, so a stage that writes artifacts (export, optimize) starts from a manifest
        of the current weights and drops every older entry, naming them in its report.
        Dropping rather than refusing: their files can no longer be loaded (no entry, no hash
        check), nothing the user asked for is lost, and retraining needs no manual cleanup.
        Nothing is saved here; the caller saves what it adds.

        Raises:
            InputFileError: the manifest is malformed and ``force`` is not set.
        """
        source = self.file_record(WEIGHTS_NAME)
        if not self.has_manifest:
            return Manifest(source=source, metadata={}), []
        try:
            manifest = self.manifest
        except InputFileError as exc:
            if not force:
                raise InputFileError(
                    f"{exc}; pass --force to replace it (its entries are then dropped)"
                ) from exc
            return Manifest(source=source, metadata={}), []
        if manifest.source.sha256 != source.sha256:
            return Manifest(source=source, metadata={}), sorted(manifest.artifacts)
        manifest.source = source
        return manifest, []

    def _remember(self, manifest: Manifest) -> None:
        try:
            self._state.manifest = (file_key(manifest_path(self.run_dir)), copy.deepcopy(manifest))
        except OSError:
            self._state.manifest = None

    # --- hashes -----------------------------------------------------------------------------

    def sha256(self, rel: str) -> str:
        """The sha256 of a file of the run, hashed once while the file stays the same."""
        path = self.run_dir / rel
        key = file_key(path)
        digest = self._state.hashes.get(key)
        if digest is None:
            digest = fsio.sha256_file(path)
            self._state.hashes[key] = digest
        return digest

    def remember_sha256(self, rel: str, digest: str, key: _FileKey) -> None:
        """Take a digest another reader computed (the signature check hashes every signed
        file once) for the file as it was at ``key``; it is used only while the file keeps
        that identity, so a file changed since is hashed again."""
        with contextlib.suppress(OSError):
            if file_key(self.run_dir / rel) == key:
                self._state.hashes[key] = digest

    def file_record(self, rel: str) -> FileRecord:
        """A new manifest record (path, sha256, bytes) of a file of the run."""
        return FileRecord(rel, self.sha256(rel), (self.run_dir / rel).stat().st_size)

    def check_file(self, record: FileRecord) -> Path:
        """:func:`exporter.core.manifest.check_file` (IntegrityError when the file is missing, a
        symlink or differs from ``record``), each file hashed once per command."""
        return check_file(self.run_dir, record, sha256=lambda _: self.sha256(record.path))

    def check_files(self, records: Sequence[FileRecord], *, onnx: Path | None = None) -> None:
        """Check every file of an artifact; with ``onnx``, that file must also pass
        :func:`~exporter.core.onnx_safety.check_onnx_file` (parsed once while none of the
        files changes).

        Raises:
            IntegrityError: a file is missing, a symlink, or differs from its record.
            InputFileError: the ONNX file is corrupt or its external data leaves the folder.
        """
        for rec in records:
            self.check_file(rec)
        if onnx is None:
            return
        key = tuple(file_key(p) for p in (onnx, *(self.run_dir / r.path for r in records)))
        if key not in self._state.onnx_checked:
            from exporter.core.onnx_safety import check_onnx_file

            check_onnx_file(onnx)
            self._state.onnx_checked.add(key)


def open_run(run_dir: str | os.PathLike[str]) -> Run:
    """Validate a run folder made by ``tlx train`` and read its ``train.json``.

    An already opened :class:`Run` is returned as is (a stage called with one does not
    open the run again).

    Raises:
        InputFileError: the folder, ``train.json`` or ``model.safetensors`` is missing or bad.
    """
    if isinstance(run_dir, Run):
        return run_dir
    run = Path(run_dir)
    if not run.exists():
        raise InputFileError(f"run folder {run} does not exist (create one with `tlx train`)")
    if not run.is_dir():
        raise InputFileError(f"{run} is not a folder: pass the run folder made by `tlx train`")
    tj = run / TRAIN_JSON
    if not tj.is_file():
        raise InputFileError(f"{tj} not found: {run} is not a tlx run folder (made by `tlx train`)")
    try:
        record = json.loads(tj.read_text(encoding="utf-8"))
        class_names = [str(c) for c in record["dataset"]["class_names"]]
        if not class_names:
            raise ValueError("no class names")
        pre = Preprocessing.from_dict(record["preprocessing"])
    except (OSError, KeyError, TypeError, ValueError) as exc:  # bad JSON or text: ValueErrors
        raise InputFileError(f"{tj} is malformed: {exc}") from exc
    if not (run / WEIGHTS_NAME).is_file():
        raise InputFileError(f"{run / WEIGHTS_NAME} not found: the run has no trained weights")
    return Run(run, record, class_names, pre)

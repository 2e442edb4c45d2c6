"""Fixtures for signing tests: a key pair made in the test, one signed run per session with a
Triton repository, and hard-linked clones of it that a test may tamper with."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("model_signing", reason="the sign extra: pip install -e '.[sign]'")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory, key_pair: Callable) -> KeyPair:
    return KeyPair(*key_pair(tmp_path_factory.mktemp("keys"), "signer"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory, key_pair: Callable) -> KeyPair:
    return KeyPair(*key_pair(tmp_path_factory.mktemp("other_keys"), "other"))


def _clone(src: Path, dest: Path) -> Path:
    """A copy of a run whose files are hard links (no GB copy). Tests replace files, never
    write into them; the lock file is left out (a shared inode would share the lock)."""
    for folder, _, files in os.walk(src):
        out = dest / Path(folder).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name != ".tlx.lock":
                os.link(Path(folder) / name, out / name)
    return dest


@pytest.fixture(scope="session")
def clone_run() -> Callable[[Path, Path], Path]:
    return _clone


def _tiny_run(run: Path) -> Path:
    """A run folder's layout with small stand-in files: what a signature sees, in
    milliseconds (the signature check never parses a file, so the bytes need not be models)."""
    import json

    from exporter.core.manifest import ArtifactEntry, FileRecord, Manifest, save_manifest
    from exporter.core.preprocess import Preprocessing

    files = {
        "model.safetensors": b"weights",
        "model.onnx": b"onnx graph" * 100,
        "triton/vgg16/1/model.onnx": b"onnx graph" * 100,
        "triton/vgg16/config.pbtxt": b'name: "vgg16"\nmax_batch_size: 8\n',
        "triton/vgg16/labels.txt": b"a\nb\n",
    }
    for rel, data in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)
    record = {
        "schema_version": 1,
        "command": "train",
        "config": {"data": {"source": "synthetic", "seed": 0}, "model": {"weights": "none"}},
        "dataset": {"name": "synthetic", "class_names": ["a", "b"], "num_classes": 2},
        "preprocessing": Preprocessing(image_size=32).to_dict(),
        "best": {"epoch": 1, "val_accuracy": 0.5},
    }
    (run / "train.json").write_text(json.dumps(record))

    def entry(name: str, fmt: str, rels: list[str]) -> ArtifactEntry:
        return ArtifactEntry(name, fmt, [FileRecord.of(run, r) for r in rels])

    artifacts = {
        "model.onnx": entry("model.onnx", "onnx", ["model.onnx"]),
        "triton/vgg16": entry(
            "triton/vgg16",
            "triton",
            ["triton/vgg16/1/model.onnx", "triton/vgg16/config.pbtxt", "triton/vgg16/labels.txt"],
        ),
    }
    source = FileRecord.of(run, "model.safetensors")
    save_manifest(run, Manifest(source=source, metadata={}, artifacts=artifacts))
    return run


@pytest.fixture(scope="session")
def tiny_signed_run(tmp_path_factory: pytest.TempPathFactory, keys: KeyPair) -> Path:
    """A signed run of small stand-in files with a Triton repository (clone it to tamper)."""
    from exporter.sign.signing import sign_run

    run = _tiny_run(tmp_path_factory.mktemp("tiny_signed") / "run")
    sign_run(run, keys.private)
    return run


@pytest.fixture(scope="session")
def make_tiny_run() -> Callable[[Path], Path]:
    return _tiny_run


@pytest.fixture(scope="module")
def signed_run(onnx_run: Path, module_tmp: Path, link_run, keys: KeyPair) -> Path:
    """A real exported run (model.onnx, weights shared by hard link), signed."""
    from exporter.sign.signing import sign_run

    run = link_run(onnx_run, module_tmp / "signed")
    sign_run(run, keys.private)
    return run


def _tamper(run: Path, target: str, how: str) -> str:
    """Tamper with ``run/target``; return the path the check must name (relative to run).

    Files are replaced, never written into: a clone shares them with the signed run.
    """
    path = run / target
    if how == "change":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.unlink()
        path.write_bytes(bytes(data))
        return target
    if how == "add":
        extra = path.with_name(path.name + ".extra")
        extra.write_bytes(b"not signed")
        return extra.relative_to(run).as_posix()
    if how == "remove":
        path.unlink()
        return target
    if how == "rename":
        path.rename(path.with_name(path.name + ".bak"))
        return target
    if how == "symlink":
        # Same bytes through a link: a hash of the target would match; the link must not.
        outside = run.parent / f"outside-{path.name}"
        os.link(path, outside)
        path.unlink()
        path.symlink_to(outside)
        return target
    raise ValueError(how)


@pytest.fixture(scope="session")
def tamper() -> Callable[[Path, str, str], str]:
    return _tamper

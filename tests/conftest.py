"""Shared fixtures: run folders made in the test (no downloads, no real dataset).

``make_run_folder`` writes what ``tlx train`` writes — ``model.safetensors`` and a valid
``train.json`` — from a randomly initialised VGG16, in about a second. Tests that need a
*trained* run call ``exporter.train.fit`` themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from session_cost import SessionCost  # tests/ is on sys.path (rootdir conftest, no package)
from session_malloc import hand_back_freed_memory, keep_freed_memory

if TYPE_CHECKING:
    import torch

FORMAT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
SYNTHETIC_CLASSES = [f"class_{i}" for i in range(10)]


# Random weights per (num_classes, seed) are built once per session and copied into each
# run folder (building them takes seconds; a run folder is its test's to modify). The
# artifacts of the shared exported runs that ``copy_run``/``link_run`` hand out are
# hard-linked instead: each copy would write 528 MB (the 32 px classifier alone is ~120 M
# parameters). tlx never writes through a link: it replaces files atomically
# (fsio.atomic_path). A test that edits such a linked file in place must first make it its
# own (the ``own`` fixture); ``_free_disk_after_test`` fails a test that did not.
_WEIGHTS: dict[tuple[int, int], Path] = {}
_RNG_AFTER: dict[tuple[int, int], object] = {}  # torch's CPU RNG state right after that build
_WEIGHTS_DIR: list[Path] = []
_SHARED: dict[Path, tuple[int, int, int]] = {}  # linked file -> (inode, size, mtime) at share


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _share(path: Path) -> Path:
    """Remember ``path`` as shared by links (checked after every test)."""
    _SHARED.setdefault(path, _stat_key(path))
    return path


def _random_weights(num_classes: int, seed: int) -> Path:
    """The session's pristine ``model.safetensors`` for a random VGG16 (seeded)."""
    cached = _WEIGHTS.get((num_classes, seed))
    if cached is not None:
        return cached
    import torch
    from safetensors.torch import save_file

    from exporter.model.vgg import build_vgg16

    if not _WEIGHTS_DIR:  # outside a session (the fixture below sets it inside one)
        _WEIGHTS_DIR.append(Path(tempfile.mkdtemp(prefix="tlx-test-weights-")))
    torch.manual_seed(seed)
    model = build_vgg16(num_classes=num_classes, weights="none").eval()
    _RNG_AFTER[num_classes, seed] = torch.get_rng_state()
    path = _WEIGHTS_DIR[0] / f"vgg16-{num_classes}-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    _WEIGHTS[num_classes, seed] = _share(path)
    return path


def _random_vgg16(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """A fresh VGG16 equal to ``torch.manual_seed(seed); build_vgg16(num_classes=num_classes,
    weights="none")``, torch's RNG left where that build leaves it, in milliseconds: the
    session's cached weights assigned to a model built on the meta device (a real build
    initialises 134 M parameters, 2-3 s on 2 cores). The model owns its tensors (a
    copy-on-write map of the file): the test may modify it."""
    import torch
    from safetensors.torch import load_file

    from exporter.model.vgg import build_vgg16

    path = _random_weights(num_classes, seed)
    with torch.device("meta"):
        model = build_vgg16(num_classes=num_classes, weights="none")
    model.load_state_dict(load_file(str(path)), assign=True)  # keeps requires_grad
    torch.set_rng_state(_RNG_AFTER[num_classes, seed])
    return model


def _written_through_links() -> list[Path]:
    """Shared files whose bytes changed since they were shared (a test wrote a link in place).

    They are forgotten, and cached weights dropped, so later tests get a fresh file.
    """
    changed = []
    for path, stat in list(_SHARED.items()):
        try:
            now = _stat_key(path)
        except OSError:  # deleted with its fixture's folder: nothing left to protect
            now = None
        if now == stat:
            continue
        del _SHARED[path]  # deleted or replaced (a new inode: its links kept the old bytes)
        if now is not None and now[0] == stat[0]:
            changed.append(path)
    for key, path in list(_WEIGHTS.items()):
        if path in changed:
            del _WEIGHTS[key]
            path.unlink(missing_ok=True)
    return changed


def _own(path: Path) -> Path:
    """Make ``path`` this test's own file (a copy, no longer a link) before editing in place."""
    if path.stat().st_nlink > 1:
        tmp = path.with_name(path.name + ".own")
        shutil.copyfile(path, tmp)
        os.replace(tmp, path)
    return path


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another filesystem (--basetemp elsewhere): copy
        shutil.copyfile(src, dest)


def _make_run_folder(
    run_dir: Path,
    *,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    train_size: int = 64,
    val_size: int = 32,
) -> Path:
    """Create a minimal, valid run folder with random (seeded) weights."""
    from exporter.core.preprocess import Preprocessing

    run_dir.mkdir(parents=True, exist_ok=True)
    # A copy, not a link: a run folder from here is the test's to modify, in place included
    # (`path.write_bytes(...)` to corrupt the weights writes into the inode it opens). On
    # tmpfs the copy costs ~0.3 s; copy_run/link_run below share files and say so.
    shutil.copyfile(_random_weights(num_classes, seed), run_dir / "model.safetensors")
    class_names = (
        SYNTHETIC_CLASSES[:num_classes]
        if num_classes <= 10
        else [f"c{i}" for i in range(num_classes)]
    )
    record = {
        "schema_version": 1,
        "command": "train",
        "config": {
            "data": {
                "source": "synthetic",
                "data_dir": None,
                "seed": seed,
                "train_size": train_size,
                "val_size": val_size,
                "image_size": image_size,
                "augment": False,
                "strict": False,
            },
            "model": {"arch": "vgg16", "weights": "none", "num_classes": num_classes},
        },
        "dataset": {"name": "synthetic", "class_names": class_names, "num_classes": num_classes},
        "preprocessing": Preprocessing(image_size=image_size).to_dict(),
        "epochs": [],
        "best": {"epoch": 0, "val_accuracy": 0.1},
    }
    (run_dir / "train.json").write_text(json.dumps(record, indent=2))
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def _weights_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Shared weights live beside the test folders: hard links need one filesystem."""
    if not _WEIGHTS_DIR:
        _WEIGHTS_DIR.append(tmp_path_factory.mktemp("weights"))


@pytest.fixture(autouse=True)
def _free_disk_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete a test's tmp_path when it ends: a run folder holds ~1.5 GB of weights and
    checkpoints, and pytest's default keeps three sessions' worth of them on disk."""
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    changed = _written_through_links()
    if changed:
        pytest.fail(
            f"this test wrote in place into {[str(p) for p in changed]} through a hard link, "
            "changing it for every test that shares it: call own(path) first (tests/conftest.py)"
        )


@pytest.fixture(scope="module")
def module_tmp(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """A folder for one test module's shared fixtures, deleted when the module ends.

    Module fixtures hold exported runs of 1-3 GB each; left to pytest they would all stay on
    disk until the session ends (over 20 GB for the suite), which fails on a fuller disk.
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A fresh random-weights run folder at 32 px (function scope: tests may modify it)."""
    return _make_run_folder(tmp_path / "run")


@pytest.fixture(scope="session")
def shared_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide run folder at 32 px for read-only use."""
    return _make_run_folder(tmp_path_factory.mktemp("shared") / "run")


_EXPORT_RESULTS: dict[Path, object] = {}  # run folder -> the ExportResult that wrote it


def _export_artifacts(run_dir: Path) -> Path:
    """Write model.onnx / model.ts / model.pt2 and manifest.json into ``run_dir``.

    Uses the real ``tlx export`` library call, so these tests also check that verify reads
    what export writes. The call's result is kept (``exported_run_result``): the export tests
    check it instead of exporting the same random weights a second time.
    """
    from exporter.core.config import ExportConfig
    from exporter.export.export import export_run

    _EXPORT_RESULTS[run_dir] = export_run(run_dir, ExportConfig(formats=tuple(FORMAT_FILES)))
    return run_dir


def _rehash(run_dir: Path, name: str) -> None:
    """Re-hash one artifact in the manifest (so a deliberate edit passes the hash check)."""
    from exporter.core.manifest import FileRecord, load_manifest, save_manifest

    manifest = load_manifest(run_dir)
    manifest.artifacts[name].files = [FileRecord.of(run_dir, name)]
    save_manifest(run_dir, manifest)


def _copy_run(src: Path, dest: Path, names: tuple[str, ...]) -> Path:
    """A new run folder with train.json, the weights, ``names`` and a manifest listing them."""

    from exporter.core.manifest import load_manifest, save_manifest

    dest.mkdir(parents=True)
    # Weights and artifacts are linked, not copied (528 MB each): a test that edits one in
    # place calls own(path) first.
    for name in ("model.safetensors", *names):
        _link_or_copy(_share(src / name), dest / name)
    shutil.copyfile(src / "train.json", dest / "train.json")
    manifest = load_manifest(src)
    manifest.artifacts = {k: v for k, v in manifest.artifacts.items() if k in names}
    save_manifest(dest, manifest)
    return dest


def _link_run(src: Path, dest: Path) -> Path:
    """A run sharing src's (never modified) weights and model.onnx by hard link: no 1 GB copy.

    Only model.onnx stays in the manifest. Callers must not write to the linked files.
    """
    dest.mkdir(parents=True)
    for name in ("model.safetensors", "model.onnx"):
        os.link(_share(src / name), dest / name)
    for name in ("train.json", "manifest.json"):
        shutil.copyfile(src / name, dest / name)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["artifacts"] = {"model.onnx": manifest["artifacts"]["model.onnx"]}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _perturb_onnx_weight(run: Path, name: str) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(run / "model.onnx"))
    init = next(i for i in model.graph.initializer if i.name == name)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 5.0 * float(np.abs(w).max())  # one weight, clearly out of tolerance
    init.CopyFrom(numpy_helper.from_array(w, name))
    (run / "model.onnx").unlink()  # may be a link to a shared export: not in place
    onnx.save(model, str(run / "model.onnx"))
    _rehash(run, "model.onnx")  # the hash check passes: only parity can catch this


def _write_fake_cifar10(root: Path, *, per_batch: int = 4) -> Path:
    """torchvision's extracted CIFAR-10 layout with tiny batches (checksums patched by caller)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    return folder


def _train_head(run_dir: Path, *, train: int, val: int, steps: int = 100) -> float:
    """Train ``classifier[6]`` on the run's synthetic training split; return val accuracy."""
    import torch
    from safetensors.torch import save_file

    from exporter.core.runfolder import open_run
    from exporter.data.datasets import load_eval_images
    from exporter.model.vgg import load_reference_model

    info = open_run(run_dir)
    model = load_reference_model(info)
    x, y = load_eval_images(info, train, split="train")
    xv, yv = load_eval_images(info, val, split="val")

    def penultimate(images: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            h = model.avgpool(model.features(torch.from_numpy(images))).flatten(1)
            return model.classifier[:6](h)

    feats, labels = penultimate(x), torch.from_numpy(y)
    head = model.classifier[6]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(feats), labels).backward()
        opt.step()
    with torch.no_grad():
        acc = float((head(penultimate(xv)).argmax(1).numpy() == yv).mean())
    (run_dir / "model.safetensors").unlink()  # a link to the session's pristine weights
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(run_dir / "model.safetensors"),
    )
    record = json.loads((run_dir / "train.json").read_text())
    record["best"] = {"epoch": 1, "val_accuracy": acc}
    (run_dir / "train.json").write_text(json.dumps(record))
    return acc


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free on 127.0.0.1 a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Helpers as fixtures: tests ask for them by name instead of importing another test module.


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """A fresh P-256 key pair as PEM files: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture(scope="session")
def key_pair() -> Callable[[Path, str], tuple[Path, Path]]:
    return _key_pair


@pytest.fixture(scope="session")
def make_run_folder() -> Callable[..., Path]:
    return _make_run_folder


@pytest.fixture(scope="session")
def random_vgg16() -> Callable[..., torch.nn.Module]:
    """``random_vgg16(num_classes=10, seed=0)``: a fresh seeded random VGG16 without the
    seconds of initialising it (the session's cached weights)."""
    return _random_vgg16


@pytest.fixture(scope="session")
def export_artifacts() -> Callable[[Path], Path]:
    return _export_artifacts


@pytest.fixture(scope="session")
def rehash() -> Callable[[Path, str], None]:
    return _rehash


@pytest.fixture(scope="session")
def copy_run() -> Callable[..., Path]:
    return _copy_run


@pytest.fixture(scope="session")
def own() -> Callable[[Path], Path]:
    """``own(path)``: break a shared file's hard link before the test edits it in place."""
    return _own


@pytest.fixture(scope="session")
def train_head() -> Callable[..., float]:
    """Train a run's ``classifier[6]`` on its synthetic split (a model with real decisions)."""
    return _train_head


@pytest.fixture(scope="session")
def ports() -> Callable[[int], list[int]]:
    """``ports(n)``: n ports that were free on 127.0.0.1 a moment ago."""
    return _free_ports


@pytest.fixture(scope="session")
def link_run() -> Callable[[Path, Path], Path]:
    return _link_run


@pytest.fixture(scope="session")
def perturb_onnx_weight() -> Callable[[Path, str], None]:
    return _perturb_onnx_weight


@pytest.fixture(scope="session")
def write_fake_cifar10() -> Callable[..., Path]:
    return _write_fake_cifar10


@pytest.fixture(scope="module")
def quick_optimize_timing() -> Iterator[None]:
    """``tlx optimize`` times every file it built and the trained model (3 warm-up calls and
    5 rounds of 8 per runtime: ~20 s for the eager model at 224 px on 2 cores); a test that
    needs only the figures to exist times one call each (``usefixtures`` a module)."""
    from exporter.optimize import timing

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timing, "ROUNDS", 1)
        mp.setattr(timing, "PER_ROUND", 1)
        mp.setattr(timing, "WARMUP", 0)
        yield


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported random-weights run per test session (read-only for callers)."""
    return _export_artifacts(_make_run_folder(tmp_path_factory.mktemp("exported") / "run"))


@pytest.fixture(scope="session")
def exported_run_result(exported_run: Path) -> tuple[Path, object]:
    """``exported_run`` and the ``ExportResult`` of the ``export_run`` call that made it."""
    return exported_run, _EXPORT_RESULTS[exported_run]


# Test folders are throwaway (run folders of 0.5-3 GB each, deleted when their test or module
# ends): on a RAM disk they cost no disk writes and no fsync. Only where memory is ample:
# tmpfs pages are RAM, and the suite's own peak RSS is several GiB.
TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 12 << 30
TMPFS_MIN_MEM_AVAILABLE = 16 << 30
_TMPFS_KEY = pytest.StashKey[Path]()


def _mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tmpfs_basetemp() -> Path | None:
    """A fresh folder on /dev/shm for this session's temp files, or None (use the disk).

    ``TLX_TEST_TMP=disk`` keeps pytest's default; ``TLX_TEST_TMP=tmpfs`` skips the checks.
    """
    choice = os.environ.get("TLX_TEST_TMP", "auto")
    if choice == "disk" or not TMPFS.is_dir():
        return None
    if choice != "tmpfs":
        free = shutil.disk_usage(TMPFS).free
        if free < TMPFS_MIN_FREE or _mem_available() < TMPFS_MIN_MEM_AVAILABLE:
            return None
    return Path(tempfile.mkdtemp(prefix="tlx-tests-", dir=TMPFS))


def pytest_configure(config: pytest.Config) -> None:
    """Print what the session cost at its end; put temp folders on tmpfs where it fits; keep
    freed memory in the heap (session_malloc)."""
    config.pluginmanager.register(SessionCost(), "tlx-session-cost")
    keep_freed_memory()
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        base = _tmpfs_basetemp()
        if base is not None:
            config.option.basetemp = str(base)
            config.stash[_TMPFS_KEY] = base


def pytest_runtest_logfinish() -> None:
    hand_back_freed_memory(_mem_available())


def pytest_report_header(config: pytest.Config) -> str | None:
    base = config.stash.get(_TMPFS_KEY, None)
    if base is None:
        return None
    return f"temp folders on tmpfs, not counted as disk writes: {base} (TLX_TEST_TMP=disk)"


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _WEIGHTS_DIR:
        shutil.rmtree(folder, ignore_errors=True)
    base = config.stash.get(_TMPFS_KEY, None)
    if base is not None:  # RAM until removed: failed tests' folders are not kept here
        shutil.rmtree(base, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests skip with a reason on a machine without CUDA (e.g. ``-m gpu`` on a CPU box)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def onnx_run(tmp_path_factory: pytest.TempPathFactory, exported_run: Path) -> Path:
    """One random-weights run with only model.onnx exported (read-only for callers).

    The same weights and ONNX file as ``exported_run`` (hard links, its manifest cut to
    model.onnx): exporting them a second time would cost the session an ONNX export.
    """
    return _link_run(exported_run, tmp_path_factory.mktemp("onnx_only") / "run")

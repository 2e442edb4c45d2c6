"""Untrusted files and crash safety: no code runs from a pickle, no half-written file survives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from exporter.core.errors import InputFileError
from exporter.core.fsio import TMP_PREFIX, clean_stale_temps
from exporter.model.vgg import build_vgg16, read_state_dict


class _Canary:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_code_running_pickle_is_refused(tmp_path: Path, suffix: str) -> None:
    canary = tmp_path / "canary"
    evil = tmp_path / f"evil{suffix}"
    torch.save({"features.0.weight": _Canary(str(canary))}, evil)
    with pytest.raises(InputFileError, match=f"evil{suffix}"):
        build_vgg16(num_classes=10, weights=evil)
    assert not canary.exists(), "unpickling ran code"


def test_non_tensor_pickle_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(InputFileError, match="not a state dict"):
        read_state_dict(p)


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1000)}, str(p))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(InputFileError, match=r"w\.safetensors"):
        read_state_dict(p)


_WRITER = """
import sys
from exporter.core.fsio import write_bytes
dest = sys.argv[1]
blobs = [bytes([65]) * 3_000_000, bytes([66]) * 2_000_000]
i = 0
print("ready", flush=True)
while True:
    write_bytes(dest, blobs[i % 2])
    i += 1
"""


def test_sigkill_during_atomic_writes_never_leaves_a_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    valid = {b"A" * 3_000_000, b"B" * 2_000_000}
    rng = random.Random(0)
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(dest)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # wait until the writer loop starts
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if dest.exists():
            assert dest.read_bytes() in valid
        clean_stale_temps(tmp_path)
        assert not list(tmp_path.glob(TMP_PREFIX + "*"))
    assert dest.exists()


@pytest.mark.parametrize(
    ("version", "ok"), [("2.9.1", False), ("2.10.0", True), ("2.14.1+cu130", True)]
)
def test_old_torch_refuses_to_unpickle(version: str, ok: bool) -> None:
    from exporter.core.errors import EnvironmentUnavailable
    from exporter.model.vgg import _require_safe_torch_load

    if ok:
        _require_safe_torch_load(version)
    else:
        with pytest.raises(EnvironmentUnavailable, match=r"torch>=2\.10"):
            _require_safe_torch_load(version)

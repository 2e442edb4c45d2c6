"""Concurrent commands on one run folder: every artifact listed, every hash right.

Before the run lock, ``tlx export --format torchscript`` and ``--format pt2`` started together
both exited 0 and one of the files was missing from manifest.json (a lost update).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.core.fsio import sha256_file
from exporter.core.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_concurrent_exports_and_optimize_list_every_artifact(
    tmp_path: Path, make_run_folder
) -> None:
    run = make_run_folder(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    commands = [
        ["export", str(run), "--format", "torchscript", "-q"],
        ["export", str(run), "--format", "pt2", "-q"],
        ["export", str(run), "--format", "onnx", "-q"],
        ["optimize", str(run), "--variants", "fold", "--eval-samples", "8", "-q"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "exporter", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in commands
    ]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (p.args, err[-2000:])
    waited = [err for _, err in outs if "waiting for another tlx command" in err]
    assert waited, "no command reported waiting: they did not overlap"

    manifest = load_manifest(run)
    expected = {"model.ts", "model.pt2", "model.onnx", "model.fold.onnx"}
    assert set(manifest.artifacts) == expected
    for entry in manifest.artifacts.values():
        for rec in entry.files:
            path = run / rec.path
            assert path.stat().st_size == rec.bytes, rec.path
            assert sha256_file(path) == rec.sha256, rec.path
    assert not list(run.glob(".tlx-tmp-*"))

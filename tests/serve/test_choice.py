"""choose: bench recommendation, then verify.json, then model.onnx; names checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from exporter.core.errors import UsageError
from exporter.core.manifest import ArtifactEntry, FileRecord, load_manifest, save_manifest
from exporter.serve.choice import choose

VARIANTS = {"fold-int8": "model.fold.int8.onnx", "fp16": "model.fp16.onnx"}


def _pick(run: Path, **kw: Any) -> tuple[Any, str]:
    choice = choose(run, **kw)
    return choice.artifact, choice.runtime


@pytest.fixture
def run(onnx_run: Path, copy_run, tmp_path: Path) -> Path:
    """The ONNX run plus two (copied) variant entries: choice reads only names and hashes."""
    run = copy_run(onnx_run, tmp_path / "run", ("model.onnx",))
    manifest = load_manifest(run)
    for variant, name in VARIANTS.items():
        shutil.copyfile(run / "model.onnx", run / name)
        manifest.artifacts[name] = ArtifactEntry(
            name=name,
            format="onnx",
            files=[FileRecord.of(run, name)],
            precision="int8" if "int8" in variant else "fp16",
            variant=variant,
        )
    save_manifest(run, manifest)
    return run


def _verify(run: Path, device: str, passed: dict[str, bool], sha: dict[str, str] | None = None):
    cands = [
        {
            "runtime": "ort-cpu",
            "artifact": name,
            "passed": ok,
            **({"sha256": sha[name]} if sha and name in sha else {}),
        }
        for name, ok in passed.items()
    ]
    (run / "verify.json").write_text(
        json.dumps({"config": {"device": device}, "candidates": cands})
    )


def test_without_reports_model_onnx_on_ort(run: Path) -> None:
    art, rt = _pick(run)
    assert (art.name, rt) == ("model.onnx", "ort-cpu")


def test_best_verified_variant_for_the_device(run: Path) -> None:
    _verify(run, "cpu", {"model.onnx": True, "model.fp16.onnx": True, "model.fold.int8.onnx": True})
    assert _pick(run)[0].name == "model.fold.int8.onnx"
    _verify(
        run, "cpu", {"model.onnx": True, "model.fp16.onnx": True, "model.fold.int8.onnx": False}
    )
    assert _pick(run)[0].name == "model.onnx"


def test_verify_on_another_device_or_file_does_not_count(run: Path) -> None:
    _verify(run, "cuda", {"model.fold.int8.onnx": True})
    assert _pick(run)[0].name == "model.onnx"
    _verify(run, "cpu", {"model.fold.int8.onnx": True}, sha={"model.fold.int8.onnx": "0" * 64})
    assert _pick(run)[0].name == "model.onnx"


def test_bench_recommendation_wins_when_still_in_the_manifest(run: Path) -> None:
    _verify(run, "cpu", {"model.fold.int8.onnx": True})
    rec = {"device": "cpu", "batch_size": 8, "runtime": "ort-cpu", "verified": True}
    recs = [
        {**rec, "artifact": "model.fp16.onnx", "file": "model.fp16.onnx"},
        {**rec, "batch_size": 64, "artifact": "model.gone.onnx", "file": "model.gone.onnx"},
    ]
    (run / "bench.json").write_text(json.dumps({"recommendations": recs}))
    assert _pick(run)[0].name == "model.fp16.onnx"
    (run / "bench.json").write_text("{not json")
    assert _pick(run)[0].name == "model.fold.int8.onnx"


def test_named_variant_and_runtime(run: Path) -> None:
    assert _pick(run, variant="fp16")[0].name == "model.fp16.onnx"
    assert _pick(run, variant="model.fold.int8.onnx")[0].name == "model.fold.int8.onnx"
    art, rt = _pick(run, variant="eager")
    assert (art.name, rt) == ("model.safetensors", "eager")
    art, rt = _pick(run, runtime="eager")
    assert (art.name, rt) == ("model.safetensors", "eager")
    with pytest.raises(UsageError, match="onnx only"):
        _pick(run, variant="eager", formats=("onnx",))
    with pytest.raises(UsageError, match="choose from: fold-int8, fp16"):
        _pick(run, variant="int4")


def test_reports_naming_runtimes_not_here_are_skipped(run: Path) -> None:
    rec = {"device": "cpu", "batch_size": 8, "verified": True, "runtime": "no-such-runtime"}
    rec.update(artifact="model.fp16.onnx", file="model.fp16.onnx")
    (run / "bench.json").write_text(json.dumps({"recommendations": [rec]}))
    cands = [{"runtime": "no-such-runtime", "artifact": "model.fold.int8.onnx", "passed": True}]
    (run / "verify.json").write_text(json.dumps({"config": {"device": "cpu"}, "candidates": cands}))
    art, rt = _pick(run)
    assert (art.name, rt) == ("model.onnx", "ort-cpu")


def test_runtime_for_another_device_is_a_usage_error(run: Path) -> None:
    with pytest.raises(UsageError, match="--device"):
        _pick(run, runtime="ort-cuda")
    with pytest.raises(UsageError, match="--device"):
        _pick(run, runtime="ort-cuda", variant="model.onnx")

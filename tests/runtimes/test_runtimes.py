"""Runtimes (parametrized over the registry) and artifact selection.

``export_artifacts`` makes ONNX / TorchScript / .pt2 files plus a manifest for a run folder
through ``exporter.export.export.export_run``, the same call ``tlx export`` makes.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from exporter.core.errors import IntegrityError, RuntimeUnavailable, UsageError
from exporter.runtimes import REGISTRY, load_all
from exporter.runtimes.selection import artifacts_of_run, plan

# openvino is a dependency on Linux x86_64 (pyproject.toml); elsewhere it may skip.
_OPENVINO = ("openvino",) if (platform.system(), platform.machine()) == ("Linux", "x86_64") else ()
CPU_RUNTIMES = ("eager", "torchscript", "pt2", "compile", "ort-cpu", *_OPENVINO)
FORMAT_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}

_EXPORTED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def run_dir(exported_run: Path) -> Path:
    return exported_run


@pytest.fixture(scope="module")
def reference(run_dir: Path):
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model

    return load_reference_model(open_run(run_dir))


def _runtime_params() -> list:
    params = []
    for name in load_all():
        marks = [pytest.mark.slow] if name == "compile" else []  # inductor: ~50 s on 2 cores
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _runtime_params())
def test_runtime_matches_reference(name: str, run_dir: Path, reference) -> None:
    import torch

    cls = REGISTRY[name]
    device = "cpu" if "cpu" in cls.devices else "cuda"
    reason = cls.unavailable_reason(device)
    if device == "cuda" and not torch.cuda.is_available():
        reason = reason or "no CUDA device on this machine"
    if reason:
        assert name not in CPU_RUNTIMES, f"CPU runtime {name} must never skip: {reason}"
        pytest.skip(reason)
    arts = [a for a in artifacts_of_run(run_dir) if cls.supports(a, device)]
    assert arts, f"{name} has no artifact to run"
    rng = np.random.default_rng(1)
    for art in arts:
        rt = cls(art, device)
        rt.load()
        try:
            for b in (1, 3):
                x = rng.standard_normal((b, 3, 32, 32), dtype=np.float32)
                with torch.inference_mode():
                    want = reference(torch.from_numpy(x)).numpy()
                got = rt.infer(x)
                assert got.shape == (b, 10) and got.dtype == np.float32
                np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
            info = rt.describe()
            assert info["runtime"] == name and info["artifact"] == art.name
        finally:
            rt.close()


def test_every_cpu_runtime_is_registered() -> None:
    assert set(CPU_RUNTIMES) <= set(load_all())
    assert {"ort-cuda", "ort-trt"} <= set(load_all())


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the no-GPU failure path"
)
@pytest.mark.parametrize(
    ("name", "match"), [("ort-cuda", "CUDA requested"), ("ort-trt", "TensorRT requested")]
)
def test_ort_gpu_provider_that_cannot_load_is_unavailable(
    name: str, match: str, run_dir: Path
) -> None:
    # onnxruntime-gpu lists CUDA/TensorRT as available here, but they cannot load: ORT would
    # silently run on the CPU. That must be RuntimeUnavailable, never a pass.
    onnx_art = next(a for a in artifacts_of_run(run_dir) if a.format == "onnx")
    rt = REGISTRY[name](onnx_art, "cuda")
    with pytest.raises(RuntimeUnavailable, match=match):
        rt.load()


def test_hash_mismatch_refused_before_torchscript_load(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_run, own
) -> None:
    import torch

    run = copy_run(run_dir, tmp_path / "run", ("model.ts",))
    with open(own(run / "model.ts"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")

    def must_not_load(*_a, **_k):
        raise AssertionError("torch.jit.load called on a file whose hash did not match")

    monkeypatch.setattr(torch.jit, "load", must_not_load)
    art = next(a for a in artifacts_of_run(run) if a.format == "torchscript")
    with pytest.raises(IntegrityError, match=r"does not match manifest\.json"):
        REGISTRY["torchscript"](art, "cpu").load()


def test_artifacts_of_run_reads_variants_generically(
    run_dir: Path, tmp_path: Path, copy_run
) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    raw = json.loads((run / "manifest.json").read_text())
    entry = dict(raw["artifacts"]["model.onnx"])
    entry.update(precision="int8", variant="fold.int8", input_constraints={"fixed_hw": [32, 32]})
    raw["artifacts"]["model.fold.int8.onnx"] = entry
    (run / "manifest.json").write_text(json.dumps(raw))
    arts = {a.name: a for a in artifacts_of_run(run)}
    assert set(arts) == {"model.safetensors", "model.onnx", "model.fold.int8.onnx"}
    fold = arts["model.fold.int8.onnx"]
    assert (fold.format, fold.precision, fold.fixed_hw, fold.image_size) == (
        "onnx",
        "int8",
        True,
        32,
    )
    assert fold.accepts_hw(32, 32) and not fold.accepts_hw(64, 64)
    assert arts["model.onnx"].accepts_hw(64, 64)
    assert arts["model.safetensors"].sha256 == raw["source"]["sha256"]


def test_plan_all_skips_with_reasons_and_named_unavailable_raises(run_dir: Path) -> None:
    the_plan = plan(run_dir, "all", "cpu")
    names = {cls.name for cls, _ in the_plan.pairs}
    assert set(CPU_RUNTIMES) <= names
    reasons = {s.runtime: s.reason for s in the_plan.skipped}
    assert "cuda" in reasons["ort-cuda"] and "cuda" in reasons["ort-trt"]
    with pytest.raises(RuntimeUnavailable, match="ort-cuda"):
        plan(run_dir, ["ort-cuda"], "cpu")
    with pytest.raises(UsageError, match="unknown runtime"):
        plan(run_dir, ["onnx-magic"], "cpu")
    with pytest.raises(UsageError, match="--device"):
        plan(run_dir, ["eager"], "tpu")


def test_plan_named_runtime_without_artifact_is_usage_error(
    run_dir: Path, tmp_path: Path, copy_run
) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    with pytest.raises(UsageError, match="no torchscript artifact"):
        plan(run, ["torchscript"], "cpu")

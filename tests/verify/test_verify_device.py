"""Verify on a device: the CUDA fp32 profile, TF32 off and recorded, --localize on the
candidate's device, and a candidate that cannot load does not stop the others."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.core.config import VerifyConfig
from exporter.core.errors import RuntimeUnavailable
from exporter.verify import verify as verify_mod
from exporter.verify.tolerance import PROFILES, profile_for


def test_cuda_fp32_profile_scales_atol_with_the_logits() -> None:
    cpu, cuda = profile_for("fp32"), profile_for("fp32", device="cuda")
    assert cpu == PROFILES["fp32"] and not cpu.atol_scaled
    assert cuda.atol_scaled and cuda.rtol == cpu.rtol and cuda.min_top1 == 1.0
    ref = np.array([[20.0, -3.0, 0.0]])
    assert cuda.effective_atol(ref) == pytest.approx(20 * cpu.atol)
    # An explicit --atol is absolute on every device; half precisions are unchanged.
    assert profile_for("fp32", device="cuda", atol=1e-3).atol_scaled is False
    assert profile_for("fp16", device="cuda") == PROFILES["fp16"]


def _link_models_copy_rest(src: str, dst: str) -> None:
    if Path(src).suffix in {".safetensors", ".onnx", ".ts", ".pt2"}:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def test_unloadable_candidate_is_skipped_and_the_others_are_verified(
    exported_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter.runtimes.ort import OrtCpuRuntime

    run = tmp_path / "run"
    # Read-only use: share the 2 GB of weights and artifacts by hard link (tlx replaces files
    # atomically, so verify's writes never reach the session's folder); the rest is copied.
    shutil.copytree(exported_run, run, copy_function=_link_models_copy_rest)

    def no_provider(self: Any) -> None:
        raise RuntimeUnavailable("provider failed to load")

    monkeypatch.setattr(OrtCpuRuntime, "load", no_provider)
    cfg = VerifyConfig(runtimes=("ort-cpu", "torchscript"), samples=0, batch_sizes=(1, 2))
    report = verify_mod.verify_run(run, cfg)
    assert [c.runtime for c in report.candidates] == ["torchscript"]
    assert report.candidates[0].passed
    assert report.skipped == [
        {"runtime": "ort-cpu", "artifact": "model.onnx", "reason": "provider failed to load"}
    ]
    assert report.to_dict()["math"] == {"device": "cpu", "tf32": None}


def test_localize_runs_the_candidate_on_the_verified_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import exporter.verify.localize as localize

    seen: dict[str, Any] = {}

    def fake(reference: Any, art: Any, x: Any, tol: Any, *, device: str = "cpu") -> dict:
        seen["device"] = device
        return {"layer": "features.0", "reason": "r", "layers": []}

    monkeypatch.setattr(localize, "localize_divergence", fake)
    found = verify_mod._localize(None, None, "ort-cuda", np.zeros((1, 3, 4, 4)), "k", None, "cuda")
    assert seen["device"] == "cuda" and found["device"] == "cuda"


@pytest.mark.gpu
def test_tlx_verify_on_cuda_passes_fp32_with_tf32_off(exported_run: Path, tmp_path: Path) -> None:
    from exporter.cli import app

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    args = ["verify", str(run), "--device", "cuda", "--runtimes", "eager,torchscript,pt2"]
    result = CliRunner().invoke(app, [*args, "--samples", "0", "--localize", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "verify.json").read_text())
    assert report["verdict"] == "pass" and report["passed_n"] == 3
    assert report["math"]["tf32"] is False
    assert report["math"]["tf32_flags"]["cudnn_conv"] in ("ieee", False)
    assert all(c["runtime_info"]["precision"] == "fp32" for c in report["candidates"])


def test_cuda_candidates_run_with_tf32_off_and_the_flags_come_back() -> None:
    from exporter.runtimes.cuda_math import flags_for, tf32_flags

    before = tf32_flags()
    with verify_mod._candidate_math("cuda") as math:
        assert math["tf32"] is False and math["ort_cuda_use_tf32"] == 0
        assert math["tf32_flags"] == flags_for(False) == tf32_flags()
    assert tf32_flags() == before
    with verify_mod._candidate_math("cpu") as math:
        assert math == {"device": "cpu", "tf32": None} and tf32_flags() == before

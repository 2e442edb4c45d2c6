"""``tlx verify`` through the CLI: reports written and exit codes 0 / 1 / 2 / 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.errors import EXIT_ENV, EXIT_GATE, EXIT_OK, EXIT_USAGE


@pytest.fixture(scope="module")
def run_dir(exported_run: Path) -> Path:
    return exported_run


def invoke(*args: str):
    return CliRunner().invoke(app, ["verify", *args])


def test_verify_passes_and_writes_reports(run_dir: Path, tmp_path: Path, copy_run) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    result = invoke(
        str(run), "--runtimes", "eager,ort-cpu", "--samples", "4", "--batch-sizes", "1,3"
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "PASS" in result.output and "ort-cpu" in result.output
    report = json.loads((run / "verify.json").read_text())
    assert report["schema_version"] == 1 and report["verdict"] == "pass"
    assert report["config"]["runtimes"] == ["eager", "ort-cpu"]
    assert report["environment"]["onnxruntime"]
    cand = report["candidates"][1]
    assert cand["runtime"] == "ort-cpu" and cand["overall"]["max_abs_error"] < 1e-4
    manifest = json.loads((run / "manifest.json").read_text())
    assert cand["sha256"] == manifest["artifacts"]["model.onnx"]["files"][0]["sha256"]
    assert cand["tolerance"]["atol"] == 1e-4
    assert (run / "verify.md").read_text().startswith("# tlx verify: PASS")


def test_perturbed_onnx_exits_1_and_localize_names_layer(
    run_dir: Path, tmp_path: Path, copy_run, perturb_onnx_weight
) -> None:
    # Also the library's facts (verify_run's report, as verify.json): one verify run with
    # localize checks both, instead of a CLI run and a library run of the same case.
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx", "model.ts"))
    perturb_onnx_weight(run, "features.10.weight")
    result = invoke(
        str(run), "--runtimes", "ort-cpu,torchscript", "--samples", "2", "--batch-sizes", "2",
        "--localize",
    )  # fmt: skip
    assert result.exit_code == EXIT_GATE, result.output
    assert "features.10" in result.output
    report = json.loads((run / "verify.json").read_text())
    assert report["verdict"] == "fail"
    by_rt = {c["runtime"]: c for c in report["candidates"]}
    assert not by_rt["ort-cpu"]["passed"]
    assert any("beyond tolerance" in f for f in by_rt["ort-cpu"]["failures"])
    assert by_rt["ort-cpu"]["localization"]["layer"] == "features.10"
    assert by_rt["torchscript"]["passed"]  # one failure does not stop the others


def test_atol_override_is_recorded_and_applied(run_dir: Path, tmp_path: Path, copy_run) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    # An absurdly strict atol/rtol makes even a correct export fail: the override is used.
    result = invoke(
        str(run), "--runtimes", "ort-cpu", "--samples", "0", "--batch-sizes", "2",
        "--atol", "0", "--rtol", "0", "--quiet",
    )  # fmt: skip
    report = json.loads((run / "verify.json").read_text())
    assert report["candidates"][0]["tolerance"]["atol"] == 0
    assert result.exit_code == EXIT_GATE, result.output


def test_ort_cuda_on_this_machine_exits_3(run_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the no-GPU failure path does not apply")
    result = invoke(str(run_dir), "--runtimes", "ort-cuda", "--device", "cuda", "--samples", "0")
    assert result.exit_code == EXIT_ENV, result.output
    assert "CUDA requested" in result.output
    result = invoke(str(run_dir), "--runtimes", "ort-cuda", "--samples", "0")
    assert result.exit_code == EXIT_ENV and "cuda" in result.output


def test_hash_mismatch_exits_2_before_load(run_dir: Path, tmp_path: Path, copy_run, own) -> None:
    run = copy_run(run_dir, tmp_path / "run", ("model.ts",))
    with open(own(run / "model.ts"), "r+b") as fh:
        fh.seek(200)
        fh.write(b"tampered")
    result = invoke(str(run), "--runtimes", "torchscript", "--samples", "0")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "does not match manifest.json" in result.output
    assert "Traceback" not in result.output
    assert not (run / "verify.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "1,x"], "--batch-sizes"),
        (["--runtimes", "warp-drive"], "unknown runtime"),
        (["--runtimes", "all,eager"], "'all' alone"),
        (["--min-top1", "99"], "--min-top1"),
    ],
)
def test_bad_usage_exits_2(run_dir: Path, args: list[str], message: str) -> None:
    result = invoke(str(run_dir), "--samples", "0", *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.output


def test_missing_run_or_manifest_exits_2(tmp_path: Path, make_run_folder) -> None:
    result = invoke(str(tmp_path / "nope"))
    assert result.exit_code == EXIT_USAGE and "does not exist" in result.output
    run = make_run_folder(tmp_path / "run")
    result = invoke(str(run))
    assert result.exit_code == EXIT_USAGE and "tlx export" in result.output


def test_device_cuda_without_gpu_exits_3_even_with_all(run_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the no-GPU failure path does not apply")
    result = invoke(
        str(run_dir), "--runtimes", "all", "--device", "cuda", "--samples", "0",
        "--batch-sizes", "1",
    )  # fmt: skip
    assert result.exit_code == EXIT_ENV, result.output
    assert "nothing could be verified on --device cuda" in result.output


def test_int8_without_heldout_images_says_it_was_not_task_checked(
    run_dir: Path, tmp_path: Path, copy_run
) -> None:
    # The int8 profile judges top-1 and accuracy on held-out images; --samples 0 has none.
    run = copy_run(run_dir, tmp_path / "run", ("model.onnx",))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"]["model.onnx"]["precision"] = "int8"
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = invoke(str(run), "--runtimes", "ort-cpu", "--samples", "0", "--batch-sizes", "2")
    assert result.exit_code == EXIT_OK, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("pass ort-cpu"))
    assert "NOT task-checked" in line
    report = json.loads((run / "verify.json").read_text())
    assert report["not_task_checked"] == ["ort-cpu/model.onnx"]
    assert report["candidates"][0]["task_checked"] is False
    assert any("NOT task-checked" in n for n in report["notes"])
    assert "not task-checked" in (run / "verify.md").read_text()

    result = invoke(str(run), "--runtimes", "ort-cpu", "--samples", "8", "--batch-sizes", "2")
    assert result.exit_code == EXIT_OK, result.output
    report = json.loads((run / "verify.json").read_text())
    assert report["not_task_checked"] == [] and report["candidates"][0]["task_checked"]

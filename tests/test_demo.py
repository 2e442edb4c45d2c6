"""``tlx demo`` end to end: a tiny library run (fast) and the real command (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import DemoConfig
from exporter.core.errors import EXIT_USAGE
from exporter.demo import DEMO_JSON, DemoResult, run_demo


@pytest.fixture(scope="module")
def tiny_demo(module_tmp: Path, quick_optimize_timing: None) -> DemoResult:
    """Every step at its smallest: one format, one variant, three runtimes, one batch size
    (optimize times each file once: no test reads those figures, only that they exist)."""
    out = module_tmp / "run"
    cfg = DemoConfig(
        out_dir=str(out),
        train_size=32,
        val_size=16,
        epochs=1,
        batch_sizes=(1,),
        warmup=0,
        iters=2,
        formats=("torchscript",),
        variants=("fold",),
        runtimes=("eager", "torchscript", "ort-cpu"),
    )
    return run_demo(cfg)


def test_tiny_demo_runs_every_step(tiny_demo: DemoResult) -> None:
    assert set(tiny_demo.step_seconds) == {"train", "export", "optimize", "verify", "bench"}
    train_json = json.loads((tiny_demo.run_dir / "train.json").read_text())
    assert tiny_demo.val_accuracy == train_json["best"]["val_accuracy"]
    assert {(v["runtime"], v["verdict"]) for v in tiny_demo.verdicts()} == {
        ("eager", "pass"),
        ("torchscript", "pass"),
        ("ort-cpu", "pass"),
    }
    assert tiny_demo.passed
    assert tiny_demo.gate_failures == []
    assert tiny_demo.variants() == [
        {"variant": "fold", "artifact": "model.fold.onnx", "status": "shipped", "reason": None}
    ]
    assert tiny_demo.bench.fastest()[1]["runtime"] in ("eager", "torchscript", "ort-cpu")


def test_tiny_demo_recommends_a_verified_pair(tiny_demo: DemoResult) -> None:
    (rec,) = tiny_demo.bench.recommendations
    verified = {
        (v["runtime"], v["artifact"]) for v in tiny_demo.verdicts() if v["verdict"] == "pass"
    }
    assert (rec["runtime"], rec["artifact"]) in verified
    assert rec["batch_size"] == 1 and rec["device"] == "cpu" and rec["verified"] is True
    row = next(
        r
        for r in tiny_demo.bench.rows()
        if (r["runtime"], r["artifact"], r["batch_size"]) == (rec["runtime"], rec["artifact"], 1)
    )
    assert rec["median_ms"] == row["latency_ms_p50"]
    assert rec["speedup_vs_eager"] == pytest.approx(row["speedup_vs_eager"])
    record = json.loads((tiny_demo.run_dir / DEMO_JSON).read_text())
    assert record["recommendations"] == [rec]
    bench_json = json.loads((tiny_demo.run_dir / "bench.json").read_text())
    assert bench_json["recommendations"] == [rec]
    assert "## Deploy this" in (tiny_demo.run_dir / "bench.md").read_text()


def test_tiny_demo_files_exist_and_are_listed(tiny_demo: DemoResult) -> None:
    for what, path in tiny_demo.files.items():
        assert Path(path).exists(), what
    record = json.loads((tiny_demo.run_dir / DEMO_JSON).read_text())
    assert record["schema_version"] == 1 and record["command"] == "demo"
    assert record["verify_verdict"] == "pass"
    assert record["environment"]["torch"]
    assert isinstance(record["machine"]["cpus_available"], int)
    assert set(record["files"]) >= {"manifest", "verify report", "bench json", "bench png"}
    assert record["config"]["formats"] == ["torchscript"]


def test_demo_fails_the_gate_when_verification_fails(
    tiny_demo: DemoResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real failing verdict: the demo's own run, its TorchScript runtime made wrong.
    from dataclasses import replace

    from exporter.core.config import VerifyConfig
    from exporter.runtimes.torchscript import TorchScriptRuntime
    from exporter.verify.verify import verify_run

    real_infer = TorchScriptRuntime.infer
    monkeypatch.setattr(TorchScriptRuntime, "infer", lambda self, x: real_infer(self, x) + 1.0)
    cfg = VerifyConfig(runtimes=("torchscript",), samples=0)
    failed = replace(tiny_demo, verify=verify_run(tiny_demo.run_dir, cfg))
    assert not failed.passed
    assert len(failed.gate_failures) == 1
    assert failed.gate_failures[0].startswith("torchscript/model.ts: max abs error")


def test_demo_refuses_an_existing_run(tiny_demo: DemoResult) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tiny_demo.run_dir), "-q"])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "already holds a run" in result.output


def test_demo_bad_weights_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--weights", str(tmp_path / "nope.pth")]
    )
    assert result.exit_code == EXIT_USAGE, result.output
    assert "nope.pth" in result.output


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    """The README's command with its default sizes: every format, every CPU runtime."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    for text in ("validation accuracy", "tlx verify: PASS", "deploy this", "files"):
        assert text in result.output
    record = json.loads((out / DEMO_JSON).read_text())
    verdicts = {v["runtime"]: v["verdict"] for v in record["verdicts"]}
    assert {"eager", "torchscript", "pt2", "ort-cpu", "openvino"} <= set(verdicts)
    assert set(verdicts.values()) == {"pass"}
    shipped = {v["artifact"] for v in record["variants"] if v["status"] == "shipped"}
    assert "model.fold.int8.onnx" in shipped
    assert {r["batch_size"] for r in record["recommendations"]} == set(DemoConfig().batch_sizes)
    assert all(Path(p).exists() for p in record["files"].values())

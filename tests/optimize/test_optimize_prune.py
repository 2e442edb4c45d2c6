"""``tlx optimize --prune``: a pruned model over budget is rejected, one within it ships, and
verify, inspect and the predictor take the shipped one like any other variant.

The run's head is trained on the synthetic shapes (a random frozen trunk), so distilling a
pruned copy for one short epoch keeps only part of its accuracy: with the default budget
(1 point) it is rejected; with a budget it can meet (``--max-drop 100 --min-agreement 0``)
it ships. Both paths are the real pipeline: prune, distill, export, fold, int8, gate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.manifest import load_manifest

TRAIN, VAL = 96, 64
# No test here reads the timing figures' values, only that they exist.
pytestmark = pytest.mark.usefixtures("quick_optimize_timing")
FAST = ["--distill-epochs", "1", "--distill-samples", "64", "--eval-samples", str(VAL)]


@pytest.fixture(scope="module")
def pruned_run(module_tmp: Path, make_run_folder, train_head) -> dict:
    """One run optimized twice: --prune 0.95 (rejected), then --prune 0.5 within a wide budget."""
    # Seed 1: the random weights test_optimize.py's run starts from (built once a session).
    run = make_run_folder(module_tmp / "run", train_size=TRAIN, val_size=VAL, seed=1)
    train_head(run, train=TRAIN, val=VAL)
    runner = CliRunner()
    rejected = runner.invoke(app, ["optimize", str(run), "--prune", "0.95", *FAST, "-q"])
    rejected_report = json.loads((run / "optimize.json").read_text())
    shipped = runner.invoke(
        app,
        ["optimize", str(run), "--prune", "0.5", "--max-drop", "100", "--min-agreement", "0",
         "--force", *FAST, "-q"],
    )  # fmt: skip
    return {"run": run, "rejected": rejected, "rejected_report": rejected_report,
            "shipped": shipped}  # fmt: skip


def test_a_pruned_model_over_the_budget_is_rejected_with_exit_1(pruned_run: dict) -> None:
    res, run = pruned_run["rejected"], pruned_run["run"]
    assert res.exit_code == 1, res.output
    assert "pruned" in res.output and "rejected" in res.output
    variants = {v["variant"]: v for v in pruned_run["rejected_report"]["variants"]}
    assert set(variants) == {"pruned", "pruned-int8"}
    for v in variants.values():
        assert v["status"] == "rejected"
        assert v["path"].startswith("rejected/")
        assert "accuracy dropped" in v["reason"] or "agreement" in v["reason"]
        assert v["gate"]["profile"]["precision"] == "task"
        assert v["gate"]["profile"]["same_function"] is False
        diff = v["gate"]["accuracy_difference"]
        assert diff["ci95_low_points"] <= diff["delta_points"] <= diff["ci95_high_points"]
        assert v["prune"]["ratio"] == 0.95
        assert v["prune"]["macs"] < v["prune"]["teacher_macs"] / 50
    assert (run / "rejected" / "model.pruned.onnx").is_file()


def test_a_pruned_model_within_the_budget_ships_folded_with_its_shape(pruned_run: dict) -> None:
    res, run = pruned_run["shipped"], pruned_run["run"]
    assert res.exit_code == 0, res.output
    manifest = load_manifest(run)
    for name, variant in (("model.pruned.onnx", "pruned"), ("model.pruned.int8.onnx",
                                                          "pruned-int8")):  # fmt: skip
        entry = manifest.artifacts[name]
        assert entry.variant == variant
        assert entry.input_constraints == {"fixed_hw": [32, 32]}  # folded at 32 px
        assert entry.extra["judge"] == "task"
        assert entry.extra["gate"]["max_accuracy_drop_points"] == 100
        model = onnx.load(str(run / name))
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["model_shape"])["fc"] == [1024, 1024]
    report = json.loads((run / "optimize.json").read_text())
    (v,) = [v for v in report["variants"] if v["variant"] == "pruned"]
    assert v["distill"]["epochs"] == 1 and v["distill"]["images"] == 64
    assert len(v["distill"]["history"]) == 1
    # Every built file was timed on this machine, with the trained model as the reference.
    p50 = report["timing"]["p50_ms"]
    assert p50["model.pruned.int8.onnx"]["ort-cpu"] > 0
    assert p50["trained model"]["eager"] > 0
    assert "model.pruned.onnx" in (run / "optimize.md").read_text()
    assert (run / "optimize.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "distill").exists() or not any((run / "distill").iterdir())


def test_verify_judges_a_pruned_variant_at_the_task_level_under_its_budget(
    pruned_run: dict,
) -> None:
    run = pruned_run["run"]
    res = CliRunner().invoke(
        app, ["verify", str(run), "--runtimes", "ort-cpu", "--samples", str(VAL), "-q"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((run / "verify.json").read_text())
    (c,) = [c for c in report["candidates"] if c["artifact"] == "model.pruned.onnx"]
    assert c["tolerance"]["precision"] == "task"
    assert c["tolerance"]["max_accuracy_drop_points"] == 100  # the budget it shipped under
    assert "logit tolerances do not apply" in c["overall_note"]
    assert c["accuracy_change_ci95_points"]["n"] == VAL


def test_the_predictor_serves_a_shipped_pruned_variant(pruned_run: dict) -> None:
    import exporter

    run = pruned_run["run"]
    with exporter.load(run, variant="pruned-int8") as predictor:
        out = predictor.logits(np.zeros((3, 3, 32, 32), np.float32))
    assert out.shape == (3, 10) and np.isfinite(out).all()


def test_inspect_shows_the_pruned_shape(pruned_run: dict) -> None:
    res = CliRunner().invoke(app, ["inspect", str(pruned_run["run"])], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "pruned 50%" in res.output


@pytest.mark.parametrize(
    "args, option",
    [
        (["--prune", "0"], "--prune"),
        (["--prune", "1"], "--prune"),
        (["--prune", "abc"], "--prune"),
        (["--prune", "0.5", "--max-drop", "-1"], "--max-drop"),
        (["--prune", "0.5", "--distill-epochs", "0"], "--distill-epochs"),
        (["--resume"], "--resume"),
    ],
)
def test_bad_prune_options_exit_2_naming_the_option(tmp_path: Path, args, option: str) -> None:
    res = CliRunner().invoke(app, ["optimize", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert option in res.output


def test_training_images_gone_is_exit_2_naming_data_dir(module_tmp: Path, make_run_folder) -> None:
    run = make_run_folder(module_tmp / "gone")
    record = json.loads((run / "train.json").read_text())
    record["config"]["data"].update(source="imagefolder", data_dir=str(module_tmp / "nowhere"))
    (run / "train.json").write_text(json.dumps(record))
    res = CliRunner().invoke(app, ["optimize", str(run), "--prune", "0.5"])
    assert res.exit_code == 2, res.output
    assert "--data-dir" in res.output and "nowhere" in res.output

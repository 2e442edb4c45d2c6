"""MODEL_CARD.md from fixed reports: the Hugging Face layout, every artifact, and numbers that
match verify.json and bench.json exactly (the real verify + bench run is in
test_signed_load.py, marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.core.envinfo import cpu_model
from exporter.core.fsio import sha256_file
from exporter.core.runfolder import open_run
from exporter.sign.card import instruction_set, write_model_card


def _table(card: str, heading: str) -> list[list[str]]:
    section = card.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@pytest.fixture
def reported_run(make_tiny_run, tmp_path: Path) -> Path:
    run = make_tiny_run(tmp_path / "run")
    record = json.loads((run / "train.json").read_text())
    record["confusion_matrix"] = [[3, 1], [0, 4]]
    record["per_class_accuracy"] = {"a": 0.75, "b": 1.0}
    (run / "train.json").write_text(json.dumps(record))
    onnx_sha = sha256_file(run / "model.onnx")
    candidate = {"artifact": "model.onnx", "sha256": onnx_sha, "error": None, "task_checked": True}
    verify = {
        "config": {"device": "cpu"},
        "candidates": [
            {
                **candidate,
                "runtime": "ort-cpu",
                "passed": True,
                "overall": {"max_abs_error": 1.2345678901234567e-07, "top1_agreement_pct": 100.0},
            },
            {
                **candidate,
                "runtime": "openvino",
                "passed": False,
                "overall": {"max_abs_error": 0.30000000000000004, "top1_agreement_pct": 87.5},
            },
        ],
        "skipped": [{"runtime": "ort-cuda", "reason": "no CUDA device"}],
    }
    row = {"artifact": "model.onnx", "runtime": "ort-cpu", "device": "cpu", "status": "ok"}
    bench = {
        "created_at": "2026-01-01T00:00:00+00:00",
        "config": {"device": "cpu"},
        "environment": {"cpu_model": cpu_model(), "torch_threads": 2},
        "rows": [
            {
                **row,
                "batch_size": 1,
                "latency_ms_p50": 0.123456789012345,
                "throughput_img_s": 8100.000000001,
            },
            {**row, "batch_size": 8, "latency_ms_p50": 2.5, "throughput_img_s": 3200.0},
            {**row, "runtime": "openvino", "batch_size": 1, "status": "error"},
        ],
        "recommendations": [
            {"device": "cpu", "batch_size": 1, "artifact": "model.onnx", "runtime": "ort-cpu"}
        ],
        "skipped": [],
    }
    (run / "verify.json").write_text(json.dumps(verify))
    (run / "bench.json").write_text(json.dumps(bench))
    return run


def test_card_layout_and_numbers(reported_run: Path) -> None:
    path = write_model_card(open_run(reported_run))
    card = path.read_text()
    verify = json.loads((reported_run / "verify.json").read_text())
    bench = json.loads((reported_run / "bench.json").read_text())
    front, body = card.split("---\n", 2)[1:]
    for line in ("license: other", "library_name: onnx", "- synthetic", "- accuracy", "- onnx"):
        assert line in front.splitlines()
    for heading in (
        "Intended use",
        "Training",
        "Metrics",
        "Shipped artifacts and parity",
        "Speed on this machine",
        "Limitations",
        "Provenance and signature",
    ):
        assert f"\n## {heading}\n" in body

    parity = _table(card, "Shipped artifacts and parity")
    for c in verify["candidates"]:
        (row,) = [r for r in parity if r[0] == c["artifact"] and r[3] == c["runtime"]]
        assert row[4] == ("pass" if c["passed"] else "fail")
        assert float(row[5]) == c["overall"]["max_abs_error"]
        assert float(row[6]) == c["overall"]["top1_agreement_pct"]
    assert ["triton/vgg16", "triton", "fp32", "—", "not verified", "—", "—"] in parity

    speed = _table(card, "Speed on this machine")
    ok = [r for r in bench["rows"] if r["status"] == "ok"]
    assert len(speed) == len(ok)
    for r, row in zip(ok, speed, strict=True):
        assert (row[0], row[1], int(row[3])) == (r["artifact"], r["runtime"], r["batch_size"])
        assert float(row[4]) == r["latency_ms_p50"] and float(row[5]) == r["throughput_img_s"]
    assert f"instruction set: {instruction_set(bench['environment'])}" in card
    assert "Deploy on cpu at batch 1: model.onnx on ort-cpu." in card

    limits = card.split("## Limitations")[1]
    assert "CUDA results were not verified" in limits
    assert "verify skipped ort-cuda: no CUDA device" in limits
    assert "- validation accuracy (best epoch 1): 0.5" in card
    assert "![confusion matrix](confusion_matrix.png)" in card
    assert (reported_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_stale_verdict_and_missing_reports(reported_run: Path) -> None:
    verify = json.loads((reported_run / "verify.json").read_text())
    verify["candidates"][0]["sha256"] = "0" * 64  # judged another file than the one listed
    (reported_run / "verify.json").write_text(json.dumps(verify))
    (reported_run / "bench.json").unlink()
    card = write_model_card(open_run(reported_run)).read_text()
    assert "stale (file changed since verify)" in card
    assert "Not measured (run `tlx bench`)" in card


def test_instruction_set_of_another_machine_is_not_guessed() -> None:
    assert instruction_set({"cpu_model": "some other CPU"}).startswith("not recorded")
    assert instruction_set({"cpu_isa": "AVX2"}) == "AVX2"

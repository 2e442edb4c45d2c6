"""bench's "deploy this": only verified pairs, fastest first, stale verdicts and devices refused.

Built from hand-made reports (cells with given samples, a manifest and a verify.json written
here), so every case is exact and fast; the demo test covers the real pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.bench.recommend import deploy_lines, recommend, recommendation_lines
from exporter.bench.result import BenchReport, CellResult, RuntimeResult
from exporter.core.config import BenchConfig

SHA = {"model.safetensors": "a" * 64, "model.onnx": "b" * 64, "model.fold.int8.onnx": "c" * 64}
BYTES = {"model.onnx": 400, "model.fold.int8.onnx": 30}


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    manifest = {
        "schema_version": 1,
        "source": {"file": "model.safetensors", "sha256": SHA["model.safetensors"], "bytes": 500},
        "metadata": {},
        "artifacts": {
            name: {
                "format": "onnx",
                "precision": "int8" if "int8" in name else "fp32",
                "files": [
                    {"path": name, "sha256": SHA[name], "bytes": 30 if "int8" in name else 400}
                ],
            }
            for name in ("model.onnx", "model.fold.int8.onnx")
        },
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def _verify(run: Path, passed: dict[tuple[str, str], bool], *, device: str = "cpu") -> None:
    candidates = [
        {
            "runtime": rt,
            "artifact": art,
            "passed": ok,
            "sha256": SHA[art],
            "overall": {"top1_agreement_pct": 100.0 if ok else 90.0},  # random inputs too
            "per_input": {"heldout": {"top1_agreement_pct": 99.5 if ok else 90.0}},
        }
        for (rt, art), ok in passed.items()
    ]
    (run / "verify.json").write_text(
        json.dumps({"config": {"device": device}, "candidates": candidates})
    )


def _report(run: Path, p50: dict[tuple[str, str], dict[int, float]]) -> BenchReport:
    results = []
    for (rt, art), cells in p50.items():
        r = RuntimeResult(runtime=rt, artifact=art, describe={"precision": "fp32"})
        r.cells = [CellResult(b, samples_ms=[ms, ms, ms]) for b, ms in cells.items()]
        results.append(r)
    return BenchReport(
        run_dir=run,
        config=BenchConfig(batch_sizes=(1, 64)),
        environment={},
        setup={},
        results=results,
        skipped=[],
        host_peak_rss_mb=None,
        created_at="now",
    )


TIMES = {
    ("eager", "model.safetensors"): {1: 40.0, 64: 900.0},
    ("ort-cpu", "model.onnx"): {1: 20.0, 64: 500.0},
    ("ort-cpu", "model.fold.int8.onnx"): {1: 2.0, 64: 150.0},
    ("openvino", "model.fold.int8.onnx"): {1: 2.5, 64: 100.0},
}


def test_fastest_verified_pair_per_batch_with_speedup_and_runner_up(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _verify(run, dict.fromkeys(TIMES, True))
    report = _report(run, TIMES)
    recs, notes = report.recommendations, report.recommendation_notes = recommend(report)
    assert notes == []
    b1, b64 = recs
    assert (b1["batch_size"], b1["runtime"], b1["artifact"]) == (
        1,
        "ort-cpu",
        "model.fold.int8.onnx",
    )
    assert b1["median_ms"] == 2.0 and b1["speedup_vs_eager"] == pytest.approx(20.0)
    assert b1["file"] == "model.fold.int8.onnx" and b1["sha256"] == SHA["model.fold.int8.onnx"]
    assert b1["verified"] is True and b1["device"] == "cpu" and b1["bytes"] == 30
    assert b1["top1_agreement_pct"] == 99.5  # on held-out images, as the int8 gate judges
    assert b1["runner_up"]["runtime"] == "openvino"
    assert b1["runner_up"]["slower_x"] == pytest.approx(1.25)
    # At batch 64 OpenVINO wins, and the report says so.
    assert (b64["runtime"], b64["speedup_vs_eager"]) == ("openvino", pytest.approx(9.0))
    assert b64["runner_up"]["runtime"] == "ort-cpu"
    text = "\n".join(recommendation_lines(recs, notes))
    assert "openvino wins: 1.50x faster than the best ort-cpu run" in text
    assert "cpu b64: model.fold.int8.onnx on openvino" in text
    first = deploy_lines(report)[0]
    assert first.startswith("deploy this (cpu, batch 1): model.fold.int8.onnx on ort-cpu")
    assert first.endswith("1.25x faster than the best openvino run")


def test_failed_or_unverified_pairs_are_never_recommended(tmp_path: Path) -> None:
    run = _run(tmp_path)
    verdicts = dict.fromkeys(TIMES, True)
    verdicts[("ort-cpu", "model.fold.int8.onnx")] = False
    del verdicts[("openvino", "model.fold.int8.onnx")]  # timed but never verified
    _verify(run, verdicts)
    recs, notes = recommend(_report(run, TIMES))
    assert [(r["runtime"], r["artifact"]) for r in recs] == [("ort-cpu", "model.onnx")] * 2
    assert any("has not passed `tlx verify`" in n and "b1" in n for n in notes)


def test_stale_verdict_after_reexport_is_not_recommended(tmp_path: Path) -> None:
    run = _run(tmp_path)
    _verify(run, dict.fromkeys(TIMES, True))
    raw = json.loads((run / "verify.json").read_text())
    for c in raw["candidates"]:
        if c["artifact"] == "model.fold.int8.onnx":
            c["sha256"] = "d" * 64  # verified an earlier file of the same name
    (run / "verify.json").write_text(json.dumps(raw))
    recs, notes = recommend(_report(run, TIMES))
    assert {r["artifact"] for r in recs} == {"model.onnx"}
    assert any("changed since `tlx verify`" in n and "model.fold.int8.onnx" in n for n in notes)


@pytest.mark.parametrize(
    ("verify_text", "note"),
    [
        (None, "no verify.json"),
        ("{not json", "unreadable"),
        ('{"config": {"device": "cuda"}, "candidates": []}', "verified on cuda"),
        ('{"config": {"device": "cpu"}, "candidates": []}', "nothing passed"),
    ],
)
def test_no_usable_verify_json_gives_no_recommendation_and_a_note(
    tmp_path: Path, verify_text: str | None, note: str
) -> None:
    run = _run(tmp_path)
    if verify_text is not None:
        (run / "verify.json").write_text(verify_text)
    report = _report(run, TIMES)
    recs, notes = report.recommendations, report.recommendation_notes = recommend(report)
    assert recs == []
    assert len(notes) == 1 and note in notes[0]
    assert "No recommendation" in "\n".join(recommendation_lines(recs, notes))
    # The terminal says why, then the fastest pair per batch size, marked as not verified.
    assert deploy_lines(report) == [
        f"no recommendation: {notes[0]}",
        "fastest at batch 1 (not verified): ort-cpu on model.fold.int8.onnx, 2.00 ms",
        "fastest at batch 64 (not verified): openvino on model.fold.int8.onnx, 100.00 ms",
    ]


def test_no_eager_row_leaves_the_speedup_unknown(tmp_path: Path) -> None:
    run = _run(tmp_path)
    times = {k: v for k, v in TIMES.items() if k[0] != "eager"}
    _verify(run, dict.fromkeys(times, True))
    recs, _ = recommend(_report(run, times))
    assert recs and all(r["speedup_vs_eager"] is None for r in recs)

"""provenance.json: an in-toto Statement v1 with the SLSA provenance v1 predicate."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.core.manifest import load_manifest
from exporter.core.runfolder import open_run
from exporter.sign.provenance import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_statement,
    data_fingerprint,
)


def test_statement_lists_every_shipped_file(tiny_signed_run: Path) -> None:
    statement = json.loads((tiny_signed_run / "provenance.json").read_text())
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == PREDICATE_TYPE
    manifest = load_manifest(tiny_signed_run)
    want = {manifest.source.path: manifest.source.sha256}
    for entry in manifest.artifacts.values():
        want.update({f.path: f.sha256 for f in entry.files})
    got = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert got == want
    build = statement["predicate"]["buildDefinition"]
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["training-data"]["annotations"]["class_names"] == ["a", "b"]
    assert deps["starting-weights"]["annotations"]["weights"] == "none"
    assert build["externalParameters"]["train"]["data"]["source"] == "synthetic"
    byproducts = {b["name"] for b in statement["predicate"]["runDetails"]["byproducts"]}
    assert "environment/sign" in byproducts


def test_data_fingerprint_follows_the_image_files(make_tiny_run, tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path / "run")
    data = tmp_path / "images"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        (data / cls / "1.png").write_bytes(b"png" * 10)
    record = json.loads((run_dir / "train.json").read_text())
    record["config"]["data"] = {"source": "folder", "data_dir": str(data), "seed": 0}
    (run_dir / "train.json").write_text(json.dumps(record))
    first = data_fingerprint(open_run(run_dir))
    assert first["files_n"] == 2 and first["files_sha256"]
    (data / "b" / "2.png").write_bytes(b"another image")
    second = data_fingerprint(open_run(run_dir))
    assert second["files_n"] == 3 and second["sha256"] != first["sha256"]


def test_calibration_draw_is_recorded_when_optimize_ran(make_tiny_run, tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path / "run")
    (run_dir / "optimize.json").write_text(
        json.dumps({"command": "optimize", "config": {"calib_samples": 32, "seed": 7}})
    )
    statement = build_statement(open_run(run_dir))
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["calibration-set"]["annotations"]["calib_samples"] == 32
    assert (
        deps["calibration-set"]["annotations"]["training_data_sha256"]
        == (deps["training-data"]["digest"]["sha256"])
    )
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["optimize"]["seed"] == 7

"""``RUN/provenance.json``: an in-toto Statement v1 with the SLSA provenance v1 predicate.

Subjects are every shipped file (the manifest's artifacts and the trained weights) with its
sha256. The predicate's ``resolvedDependencies`` name what the model was built from — the
training data (a fingerprint of the recorded data source, and of the image files when the
folder is on this machine), the calibration draw optimize made, the starting weights — and
``externalParameters`` the recorded command settings. ``tlx sign`` writes it before signing,
so the signature covers it (https://slsa.dev/spec/v1.0/provenance,
https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.core.fsio import write_json
from exporter.core.runfolder import (
    BENCH_JSON,
    DEMO_JSON,
    DEPLOY_JSON,
    EXPORT_JSON,
    OPTIMIZE_JSON,
    PROVENANCE_JSON,
    VERIFY_JSON,
)
from exporter.sign.scope import read_report

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/tlx/tlx/run-folder/v1"
BUILDER_ID = "https://github.com/tlx/tlx"
# The reports whose settings are the build's parameters, in pipeline order.
_REPORTS = (EXPORT_JSON, OPTIMIZE_JSON, VERIFY_JSON, BENCH_JSON, DEPLOY_JSON, DEMO_JSON)


def canonical_sha256(obj: Any) -> str:
    """sha256 of an object's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def data_fingerprint(run: Run) -> dict[str, Any]:
    """What the model was trained on: source, class names, counts, and a digest of them.

    For an image folder that is on this machine, the digest also covers the sorted list of
    its files with their sizes (``files_sha256``); a built-in dataset (CIFAR-10, synthetic) is
    identified by its name, seed and sizes.
    """
    data = run.data_config
    dataset = run.record.get("dataset") or {}
    facts: dict[str, Any] = {
        "source": data.get("source"),
        "data_dir": data.get("data_dir"),
        "seed": data.get("seed"),
        "class_names": list(run.class_names),
        "counts": {
            "train": dataset.get("train_size", data.get("train_size")),
            "val": dataset.get("val_size", data.get("val_size")),
        },
        "skipped_images": dataset.get("skipped_count"),
        "files_sha256": None,
    }
    folder = Path(str(data["data_dir"])) if data.get("data_dir") else None
    if folder is not None and folder.is_dir():
        facts["files_sha256"], facts["files_n"] = _file_list_digest(folder)
    return {**facts, "sha256": canonical_sha256(facts)}


def _file_list_digest(folder: Path) -> tuple[str, int]:
    """sha256 of ``relative/path<TAB>bytes`` lines, sorted: the data set as a file list."""
    lines = sorted(
        f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}"
        for p in folder.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def build_statement(run: Run) -> dict[str, Any]:
    """The statement for ``run`` (the manifest must match the files: hashes come from it)."""
    manifest = run.manifest
    subjects = [{"name": manifest.source.path, "digest": {"sha256": manifest.source.sha256}}]
    for entry in manifest.artifacts.values():
        subjects += [{"name": f.path, "digest": {"sha256": f.sha256}} for f in entry.files]
    reports = {name: read_report(run.run_dir / name) for name in _REPORTS}
    data = data_fingerprint(run)
    deps: list[dict[str, Any]] = [
        {"name": "training-data", "digest": {"sha256": data["sha256"]}, "annotations": data}
    ]
    calibration = _calibration(reports.get(OPTIMIZE_JSON), data)
    if calibration is not None:
        deps.append(calibration)
    deps.append(_weights_source(run))
    parameters: dict[str, Any] = {"train": run.record.get("config")}
    for name, report in reports.items():
        if report is not None and "config" in report:
            parameters[name.removesuffix(".json")] = report["config"]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": parameters,
                "internalParameters": {"preprocessing": run.preprocessing.to_dict()},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"tlx": __version__}},
                "metadata": {
                    "invocationId": run.run_dir.name,
                    "finishedOn": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
                "byproducts": _environments(run, reports),
            },
        },
    }


def write_provenance(run: Run) -> Path:
    """Write ``RUN/provenance.json`` atomically; return its path."""
    path = run.run_dir / PROVENANCE_JSON
    write_json(path, build_statement(run))
    return path


def _calibration(optimize: dict[str, Any] | None, data: dict[str, Any]) -> dict[str, Any] | None:
    """The static int8 variants' calibration draw: which training images, as recorded."""
    if optimize is None:
        return None
    cfg = optimize.get("config") or {}
    facts = {
        "split": "train",
        "calib_samples": cfg.get("calib_samples"),
        "seed": cfg.get("seed"),
        "training_data_sha256": data["sha256"],
    }
    return {
        "name": "calibration-set",
        "digest": {"sha256": canonical_sha256(facts)},
        "annotations": facts,
    }


def _weights_source(run: Run) -> dict[str, Any]:
    """The weights training started from (``--weights``) and the trained weights' hash."""
    model = (run.record.get("config") or {}).get("model") or {}
    source = model.get("weights")
    dep: dict[str, Any] = {"name": "starting-weights", "annotations": {"weights": source}}
    if source and Path(str(source)).is_file():
        from exporter.core.fsio import sha256_file

        dep["digest"] = {"sha256": sha256_file(Path(str(source)))}
    return dep


def _environments(run: Run, reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Tool versions each recorded step ran with, and the signer's."""
    from importlib.metadata import PackageNotFoundError, version

    steps = {"train": run.record.get("environment")}
    steps |= {n.removesuffix(".json"): (r or {}).get("environment") for n, r in reports.items()}
    out = [{"name": f"environment/{k}", "content": v} for k, v in steps.items() if v]
    signer: dict[str, Any] = {"tlx": __version__, "python": platform.python_version()}
    try:
        signer["model_signing"] = version("model-signing")
    except PackageNotFoundError:
        signer["model_signing"] = None
    out.append({"name": "environment/sign", "content": signer})
    return out

"""Numerical parity of every artifact against the eager fp32 reference: figures, gate, report.

The reference is the trained model rebuilt from ``model.safetensors`` (hash-checked against
the manifest), never an exported file, and it always runs in fp32 on the CPU. Every
candidate gets the same inputs: seeded random batches and real held-out images. All
failures are collected before the verdict; a runtime that errors gets an ``error`` and
the others continue; one that cannot load here (RuntimeUnavailable) is listed under
``skipped`` with the reason, and only when no candidate at all could run is it exit 3.

On CUDA the candidates run with TF32 off (torch's flags for the command, restored after;
ONNX Runtime's ``use_tf32: 0``; TensorRT builds under ``NVIDIA_TF32_OVERRIDE=0``): fp32 is
judged as fp32, against the CUDA fp32 profile (see ``tolerance.profile_for``). The flags
are recorded in verify.json's ``math``.

The report's types live in ``result.py``, the inputs and the judging of outputs (shared
with ``verify --server``) in ``judge.py``; this module opens the run, plans and runs the
candidates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import VerifyConfig, to_dict
from exporter.core.errors import RuntimeUnavailable
from exporter.core.report import Progress
from exporter.core.resources import require
from exporter.core.runlock import locks_run
from exporter.model.footprint import verify_need
from exporter.verify.judge import (
    build_inputs,
    error_text,
    infer_reference,
    record_outputs,
    run_batched,
)
from exporter.verify.report import write_reports
from exporter.verify.result import HELDOUT, CandidateResult, ParityReport
from exporter.verify.tolerance import TASK, Tolerance, profile_for, profile_name
from exporter.verify.triton_check import check_triton_repositories
from exporter.verify.verdict import json_safe

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.runtimes.base import Artifact, Runtime


@locks_run("verify")
def verify_run(
    run_dir: Run | str | Path, cfg: VerifyConfig, *, progress: Progress | None = None
) -> ParityReport:
    """Compare every (runtime, artifact) of ``cfg.runtimes`` with the eager reference and
    write ``verify.json`` and ``verify.md`` (``report.files``).

    The run is opened once (or ``run_dir`` is already open) and passed down: ``train.json``
    and the manifest are read once and each file is hashed once, however many candidates
    and loads use it.

    Raises:
        InputFileError / IntegrityError: bad run folder or manifest, or a file's hash does
            not match (checked for every planned artifact before anything is loaded).
        UsageError: bad config (unknown runtime, bad batch sizes).
        RuntimeUnavailable: a runtime named in ``cfg.runtimes`` is known unavailable on this
            device before loading, or no candidate at all could load (the others are
            listed under ``skipped`` with their reasons).
    """
    from exporter.core.envinfo import environment
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.runtimes.selection import artifacts_of_run, parse_runtimes, plan

    names = parse_runtimes(cfg.runtimes)  # an unknown name is exit 2 before any file is read
    info = open_run(run_dir)
    _require_resources(info, cfg)
    artifacts = artifacts_of_run(info)
    the_plan = plan(info, names, cfg.device, artifacts=artifacts)
    # Hash every file first: a changed file is refused (exit 2) before anything is loaded.
    for _, art in the_plan.pairs:
        art.verified_path()
    # The Triton repository too: no runtime runs it, but it ships the same model and labels.
    check_triton_repositories(info)
    if not the_plan.pairs:  # fail before loading the reference and running it (seconds)
        raise _nothing_verified(cfg, [s.to_dict() for s in the_plan.skipped])
    reference = load_reference_model(info, expected=info.manifest.source)
    notes: list[str] = []
    inputs, labels = build_inputs(info, cfg, notes)
    largest = max(cfg.batch_sizes)
    ref_out = {k: infer_reference(reference, x, largest) for k, x in inputs.items()}

    report = ParityReport(
        run_dir=info.run_dir,
        config=to_dict(cfg),
        environment=environment(cfg.device),
        inputs={k: {"shape": list(v.shape)} for k, v in inputs.items()},
        candidates=[],
        skipped=[s.to_dict() for s in the_plan.skipped],
        notes=notes,
    )
    if labels is not None:
        report.inputs[HELDOUT].update(split="val", labels_n=len(labels))
    with _candidate_math(cfg.device) as math:
        report.math = math
        _check_all(the_plan.pairs, report, cfg, reference, inputs, ref_out, labels, progress)
    if progress:
        progress("done", len(the_plan.pairs), len(the_plan.pairs))
    for c in report.candidates:
        if not c.task_checked:
            report.notes.append(
                f"{c.runtime}/{c.artifact} ({c.precision}) was NOT task-checked: --samples 0 "
                "measured no held-out top-1 agreement or accuracy change, which its profile "
                "judges; its result covers random inputs only (pass --samples 256 to check it)"
            )
    if not report.candidates:
        raise _nothing_verified(cfg, report.skipped)
    write_reports(report)  # a library call leaves the report choose() and recommend() read
    return report


def _nothing_verified(cfg: VerifyConfig, skipped: list[dict[str, Any]]) -> RuntimeUnavailable:
    reasons = "; ".join(f"{s['runtime']}: {s['reason']}" for s in skipped)
    return RuntimeUnavailable(
        f"nothing could be verified on --device {cfg.device}: {reasons or 'no runtimes'}"
    )


def _require_resources(info: Any, cfg: VerifyConfig) -> None:
    """Exit 3 before loading anything when memory cannot hold the reference and a candidate."""
    need = verify_need(
        size=info.preprocessing.image_size,
        batches=tuple(cfg.batch_sizes),
        samples=cfg.samples,
        num_classes=info.num_classes,
        folder=info.run_dir,
    )
    require(need)


@contextlib.contextmanager
def _candidate_math(device: str) -> Iterator[dict[str, Any]]:
    """TF32 off for the candidates on CUDA (restored after); what was in force, for the report."""
    if not device.startswith("cuda"):
        yield {"device": device, "tf32": None}
        return
    from exporter.runtimes.cuda_math import tf32_mode

    with tf32_mode(False) as flags:
        yield {"device": device, "tf32": False, "tf32_flags": flags, "ort_cuda_use_tf32": 0}


def _check_all(
    pairs: list[tuple[type[Runtime], Artifact]],
    report: ParityReport,
    cfg: VerifyConfig,
    reference: Any,
    inputs: dict[str, np.ndarray],
    ref_out: dict[str, np.ndarray],
    labels: np.ndarray | None,
    progress: Progress | None,
) -> None:
    """Check every candidate; unloadable ones go to ``report.skipped`` and the rest go on."""
    for i, (cls, art) in enumerate(pairs):
        if progress:
            progress(f"{cls.name} · {art.name}", i, len(pairs))
        name = profile_name(art.precision, art.metadata.get("variant"))
        budget = _shipped_budget(art) if name == TASK else {}
        tol = profile_for(
            name,
            atol=cfg.atol,
            rtol=cfg.rtol,
            min_top1=cfg.min_top1 if cfg.min_top1 is not None else budget.get("min_top1"),
            max_accuracy_drop_points=budget.get("max_accuracy_drop_points"),
            device=cfg.device,
        )
        try:
            result, worst = _check_candidate(
                cls, art, cfg=cfg, tol=tol, inputs=inputs, ref_out=ref_out, labels=labels
            )
        except RuntimeUnavailable as exc:
            report.skipped.append({"runtime": cls.name, "artifact": art.name, "reason": str(exc)})
            continue
        if cfg.localize and not result.passed and result.error is None:
            key = worst or next(iter(inputs))
            result.localization = _localize(
                reference, art, cls.name, inputs[key], key, tol, cfg.device
            )
        report.candidates.append(result)


def _shipped_budget(art: Artifact) -> dict[str, Any]:
    """The accuracy budget a pruned variant was shipped under (``tlx optimize --max-drop``,
    ``--min-agreement``), from its manifest entry: verify holds it to the same promise."""
    entry = art.metadata.get("entry") or {}
    extra = entry.get("extra") if isinstance(entry.get("extra"), dict) else entry
    profile = ((extra or {}).get("gate") or {}).get("profile") or {}
    out: dict[str, Any] = {}
    for key in ("min_top1", "max_accuracy_drop_points"):
        value = profile.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _check_candidate(
    cls: type[Runtime],
    art: Artifact,
    *,
    cfg: VerifyConfig,
    tol: Tolerance,
    inputs: dict[str, np.ndarray],
    ref_out: dict[str, np.ndarray],
    labels: np.ndarray | None,
) -> tuple[CandidateResult, str | None]:
    """Run one candidate on every input; return its result and the worst input's key."""
    result = CandidateResult(
        runtime=cls.name,
        artifact=art.name,
        format=art.format,
        precision=art.precision,
        tolerance=tol.to_dict(),
        sha256=art.sha256,
    )
    options = {"tf32": False, "batch_sizes": (*cfg.batch_sizes, max(cfg.batch_sizes))}
    runtime = cls(art, cfg.device, precision=art.precision, threads=cfg.threads, options=options)
    try:
        runtime.load()
        result.runtime_info = json_safe(runtime.describe())
        largest = max(cfg.batch_sizes)
        outs = {k: run_batched(runtime.infer, x, largest) for k, x in inputs.items()}
    except RuntimeUnavailable:
        raise
    except Exception as exc:  # one runtime failing must not stop the others (timm _try_run)
        result.error = error_text(exc)
        result.failures.append(f"error: {result.error}")
        return result, None
    finally:
        runtime.close()
    return result, record_outputs(result, outs, ref_out=ref_out, labels=labels, tol=tol)


def _localize(
    reference: Any,
    art: Artifact,
    runtime_name: str,
    x: np.ndarray,
    key: str,
    tol: Tolerance,
    device: str,
) -> dict[str, Any]:
    from exporter.verify.localize import localize_divergence

    try:
        # A few images are enough to see where activations part ways, and keep it fast.
        # The candidate runs where verify ran it, so a CUDA-only divergence is found.
        found = localize_divergence(reference, art, x[:8], tol, device=device)
    except Exception as exc:  # localization is a diagnosis aid; it never hides the verdict
        return {"layer": None, "error": error_text(exc), "input": key}
    found["input"] = key
    found["runtime"] = runtime_name
    found["device"] = device
    return json_safe(found)

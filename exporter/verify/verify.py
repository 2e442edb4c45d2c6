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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.config import VerifyConfig, to_dict
from exporter.core.errors import EnvironmentUnavailable, RuntimeUnavailable, UsageError
from exporter.core.manifest import hash_once
from exporter.core.report import Progress
from exporter.core.resources import require, verify_need
from exporter.core.runlock import locks_run
from exporter.verify.tolerance import Comparison, Tolerance, compare, gate, profile_for

if TYPE_CHECKING:
    from exporter.runtimes.base import Artifact, Runtime

SCHEMA_VERSION = 1
HELDOUT = "heldout"


@dataclass
class CandidateResult:
    """Parity of one runtime × artifact against the reference."""

    runtime: str
    artifact: str
    format: str
    precision: str
    tolerance: dict[str, Any]
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    overall: dict[str, Any] | None = None
    per_input: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy_reference_pct: float | None = None
    accuracy_candidate_pct: float | None = None
    accuracy_change_points: float | None = None
    runtime_info: dict[str, Any] = field(default_factory=dict)
    localization: dict[str, Any] | None = None
    # False when the profile's verdict rests on held-out images (int8) and there were none
    # (--samples 0): the pass then covers random inputs only, and says so.
    task_checked: bool = True
    # The file's manifest hash: a later consumer (predict, the Triton export) can tell a
    # verdict about this file from one about a file re-exported since.
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ParityReport:
    """Everything ``tlx verify`` found; ``verdict`` is ``pass`` or ``fail``."""

    run_dir: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    inputs: dict[str, Any]
    candidates: list[CandidateResult]
    skipped: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    math: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.candidates) and all(c.passed for c in self.candidates)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def gate_failures(self) -> list[str]:
        """One line per candidate that failed its gate (empty when every one passed)."""
        return [
            f"{c.runtime}/{c.artifact}: {'; '.join(c.failures)}"
            for c in self.candidates
            if not c.passed
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "verify",
            "run_dir": str(self.run_dir),
            "config": self.config,
            "environment": self.environment,
            "reference": {"runtime": "eager", "artifact": "model.safetensors", "device": "cpu"},
            "math": self.math,
            "inputs": self.inputs,
            "candidates": [c.to_dict() for c in self.candidates],
            "skipped": self.skipped,
            "notes": self.notes,
            "verdict": self.verdict,
            "failed_n": sum(not c.passed for c in self.candidates),
            "passed_n": sum(c.passed for c in self.candidates),
            "not_task_checked": [
                f"{c.runtime}/{c.artifact}" for c in self.candidates if not c.task_checked
            ],
        }


def build_inputs(
    info: Any, cfg: VerifyConfig, notes: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Seeded random batches (one per batch size) and the held-out images with labels."""
    size = info.preprocessing.image_size
    rng = np.random.default_rng(cfg.seed)
    inputs = {
        f"random_b{b}": rng.standard_normal((b, 3, size, size), dtype=np.float32)
        for b in sorted(set(cfg.batch_sizes))
    }
    labels = None
    if cfg.samples > 0:
        from exporter.data.datasets import load_eval_images

        try:
            images, labels = load_eval_images(info, cfg.samples, split="val", seed=cfg.seed)
        except (UsageError, EnvironmentUnavailable) as exc:
            # Keep the original class (exit 2 or 3) but say how to verify without the data.
            raise type(exc)(f"{exc} (or pass --samples 0 to verify on random inputs only)") from exc
        inputs[HELDOUT] = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) < cfg.samples:
            notes.append(
                f"the validation split has only {len(images)} images (asked {cfg.samples})"
            )
    return inputs, labels


def _run_batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    # Held-out images go through in chunks of the largest batch size: that size was checked.
    return np.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)], axis=0)


def _figures(cmp: Comparison) -> dict[str, Any]:
    return {
        "n": cmp.n,
        "max_abs_error": cmp.max_abs_error,
        "mean_abs_error": cmp.mean_abs_error,
        "p99_abs_error": cmp.p99_abs_error,
        "max_rel_error": cmp.max_rel_error,
        "min_cosine_similarity": cmp.min_cosine_similarity,
        "top1_agreement_pct": 100.0 * cmp.top1_agreement,
        "top1_ties_n": cmp.top1_ties_n,
        "nonfinite_n": cmp.nonfinite_n,
        "within_tolerance_pct": None
        if cmp.within_tolerance_fraction is None
        else 100.0 * cmp.within_tolerance_fraction,
        "worst_tolerance_excess": cmp.worst_excess,
    }


def _json_safe(obj: Any) -> Any:
    # JSON has no NaN/Inf (fsio refuses them): a NaN output is reported as None + nonfinite_n.
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:500]}"


@locks_run("verify")
@hash_once()
def verify_run(
    run_dir: str | Path, cfg: VerifyConfig, *, progress: Progress | None = None
) -> ParityReport:
    """Compare every (runtime, artifact) of ``cfg.runtimes`` with the eager reference.

    Raises:
        InputFileError / IntegrityError: bad run folder or manifest, or a file's hash does
            not match (checked for every planned artifact before anything is loaded).
        UsageError: bad config (unknown runtime, bad batch sizes).
        RuntimeUnavailable: a runtime named in ``cfg.runtimes`` is known unavailable on this
            device before loading, or no candidate at all could load (the others are
            listed under ``skipped`` with their reasons).
    """
    from exporter.core.envinfo import environment
    from exporter.core.manifest import load_manifest
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.runtimes.selection import artifacts_of_run, parse_runtimes, plan

    info = open_run(run_dir)
    _require_resources(info, cfg)
    manifest = load_manifest(info.run_dir)
    artifacts = artifacts_of_run(info.run_dir)
    the_plan = plan(info.run_dir, parse_runtimes(cfg.runtimes), cfg.device, artifacts=artifacts)
    # Hash every file first: a changed file is refused (exit 2) before anything is loaded.
    for _, art in the_plan.pairs:
        art.verified_path()
    reference = load_reference_model(info, expected=manifest.source)
    notes: list[str] = []
    inputs, labels = build_inputs(info, cfg, notes)
    largest = max(cfg.batch_sizes)
    ref_out = {k: _infer_reference(reference, x, largest) for k, x in inputs.items()}

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
        reasons = "; ".join(f"{s['runtime']}: {s['reason']}" for s in report.skipped)
        raise RuntimeUnavailable(
            f"nothing could be verified on --device {cfg.device}: {reasons or 'no runtimes'}"
        )
    return report


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
        tol = profile_for(
            art.precision,
            atol=cfg.atol,
            rtol=cfg.rtol,
            min_top1=cfg.min_top1,
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


def _infer_reference(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    import torch

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(chunk))).float().numpy()

    return _run_batched(run, x, batch)


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
        result.runtime_info = _json_safe(runtime.describe())
        largest = max(cfg.batch_sizes)
        outs = {k: _run_batched(runtime.infer, x, largest) for k, x in inputs.items()}
    except RuntimeUnavailable:
        raise
    except Exception as exc:  # one runtime failing must not stop the others (timm _try_run)
        result.error = _error_text(exc)
        result.failures.append(f"error: {result.error}")
        return result, None
    finally:
        runtime.close()
    return result, judge_outputs(result, outs, ref_out=ref_out, labels=labels, tol=tol)


def judge_outputs(
    result: CandidateResult,
    outs: dict[str, np.ndarray],
    *,
    ref_out: dict[str, np.ndarray],
    labels: np.ndarray | None,
    tol: Tolerance,
) -> str | None:
    """Fill ``result``'s figures and verdict from a candidate's outputs; return the worst input.

    The one place a candidate's outputs are judged, whether a local runtime or a server
    (``tlx verify --server``) produced them.
    """
    for key, out in outs.items():
        result.per_input[key] = _json_safe(_figures(compare(ref_out[key], out, tol)))
    keys = list(outs)
    overall = compare(
        np.concatenate([ref_out[k] for k in keys]),
        np.concatenate([outs[k] for k in keys]),
        tol,
    )
    # The whole-set comparison decides (scaled atol uses the per-set logit scale).
    if labels is not None:
        ref_acc = 100.0 * float(np.mean(np.argmax(ref_out[HELDOUT], axis=1) == labels))
        cand_acc = 100.0 * float(np.mean(np.argmax(outs[HELDOUT], axis=1) == labels))
        result.accuracy_reference_pct = ref_acc
        result.accuracy_candidate_pct = cand_acc
        result.accuracy_change_points = cand_acc - ref_acc
    result.overall = _json_safe(_figures(overall))
    # Profiles without elementwise tolerances (int8) make a task-level claim: their top-1
    # agreement is judged on real held-out images, where a quantised model is meant to
    # agree; seeded noise inputs sit near decision ties and still gate NaN/Inf. This is
    # also exactly the set `tlx optimize` gates on, so both commands reach one verdict.
    top1_cmp = None
    if tol.atol is None and HELDOUT in outs:
        top1_cmp = compare(ref_out[HELDOUT], outs[HELDOUT], tol)
        result.overall["top1_agreement_basis"] = HELDOUT
    elif tol.atol is None:
        # --samples 0 (verify without the data): kept usable offline rather than refused,
        # but the verdict must not read as the task-level check the profile stands for.
        result.task_checked = False
        result.overall["top1_agreement_basis"] = "random inputs (not task-checked)"
    drop = None if result.accuracy_change_points is None else -result.accuracy_change_points
    top1 = None if top1_cmp is None else top1_cmp.top1_agreement
    result.failures.extend(gate(overall, tol, top1=top1, accuracy_drop_points=drop).failures)
    result.passed = not result.failures
    return max(keys, key=lambda k: result.per_input[k]["max_abs_error"] or float("inf"))


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
        return {"layer": None, "error": _error_text(exc), "input": key}
    found["input"] = key
    found["runtime"] = runtime_name
    found["device"] = device
    return _json_safe(found)

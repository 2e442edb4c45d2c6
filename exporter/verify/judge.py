"""The inputs every candidate gets, and recording a candidate's verdict in its result.

Shared by the local candidates (``verify.py``) and a server (``served.py``): both see the
same seeded random batches and held-out images, and both are judged by the one judge
(:func:`exporter.verify.verdict.judge`) through :func:`record_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from exporter.core.config import VerifyConfig
from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.verify.result import HELDOUT, CandidateResult
from exporter.verify.tolerance import Comparison, Tolerance
from exporter.verify.verdict import Heldout, json_safe, judge


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


def run_batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
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


def error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:500]}"


def infer_reference(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    import torch

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(chunk))).float().numpy()

    return run_batched(run, x, batch)


def record_outputs(
    result: CandidateResult,
    outs: dict[str, np.ndarray],
    *,
    ref_out: dict[str, np.ndarray],
    labels: np.ndarray | None,
    tol: Tolerance,
) -> str | None:
    """Judge a candidate's outputs with the one judge and record the verdict and figures in
    ``result``; return the worst input's key.

    Used for local runtimes and for a server (``tlx verify --server``) alike. The whole set
    decides (a scaled atol uses the whole set's logit scale); each input's figures are kept
    for the report. Task-level profiles (int8, pruned) judge top-1 and accuracy on the real
    held-out images, exactly the set ``tlx optimize`` gates on, so both reach one verdict.
    """
    for key, out in outs.items():
        figures = judge(ref_out[key], out, tol).comparison
        result.per_input[key] = json_safe(_figures(figures))
    keys = list(outs)
    heldout = None
    if labels is not None and HELDOUT in outs:
        heldout = Heldout(ref_out[HELDOUT], outs[HELDOUT], labels)
    verdict = judge(
        np.concatenate([ref_out[k] for k in keys]),
        np.concatenate([outs[k] for k in keys]),
        tol,
        heldout=heldout,
    )
    if verdict.difference is not None:
        result.accuracy_reference_pct = 100.0 * verdict.accuracy_reference
        result.accuracy_candidate_pct = 100.0 * verdict.accuracy_candidate
        result.accuracy_change_points = verdict.difference.delta_points
        result.accuracy_change_ci95_points = json_safe(verdict.difference.to_dict())
    if not tol.same_function:
        result.overall_note = (
            "a different model (pruned and distilled): judged at the task level (held-out "
            "accuracy drop and top-1 agreement); logit tolerances do not apply"
        )
    result.overall = json_safe(_figures(verdict.comparison))
    if tol.atol is None:
        result.overall["top1_agreement_basis"] = verdict.top1_basis
    # --samples 0 (verify without the data) stays usable offline, but a task-level profile's
    # verdict must not read as the task-level check it stands for.
    result.task_checked = verdict.task_checked
    result.failures.extend(verdict.failures)
    result.passed = not result.failures
    return max(keys, key=lambda k: result.per_input[k]["max_abs_error"] or float("inf"))

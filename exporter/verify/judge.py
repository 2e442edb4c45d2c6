"""The inputs every candidate gets and the one place its outputs are judged.

Shared by the local candidates (``verify.py``) and a server (``served.py``): both see the
same seeded random batches and held-out images, and both are judged by
:func:`judge_outputs` under :mod:`exporter.verify.tolerance`'s profiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from exporter.core.config import VerifyConfig
from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.verify.result import HELDOUT, CandidateResult
from exporter.verify.tolerance import (
    Comparison,
    Tolerance,
    accuracy_difference,
    compare,
    gate,
    top1_classes,
)


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


def json_safe(obj: Any) -> Any:
    # JSON has no NaN/Inf (fsio refuses them): a NaN output is reported as None + nonfinite_n.
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text[:500]}"


def infer_reference(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    import torch

    def run(chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(chunk))).float().numpy()

    return run_batched(run, x, batch)


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
        result.per_input[key] = json_safe(_figures(compare(ref_out[key], out, tol)))
    keys = list(outs)
    overall = compare(
        np.concatenate([ref_out[k] for k in keys]),
        np.concatenate([outs[k] for k in keys]),
        tol,
    )
    # The whole-set comparison decides (scaled atol uses the per-set logit scale).
    if labels is not None:
        ref_top1, cand_top1 = top1_classes(ref_out[HELDOUT]), top1_classes(outs[HELDOUT])
        ref_acc = 100.0 * float(np.mean(ref_top1 == labels))
        cand_acc = 100.0 * float(np.mean(cand_top1 == labels))
        result.accuracy_reference_pct = ref_acc
        result.accuracy_candidate_pct = cand_acc
        result.accuracy_change_points = cand_acc - ref_acc
        result.accuracy_change_ci95_points = json_safe(
            accuracy_difference(ref_top1, cand_top1, labels).to_dict()
        )
    if not tol.same_function:
        result.overall_note = (
            "a different model (pruned and distilled): judged at the task level (held-out "
            "accuracy drop and top-1 agreement); logit tolerances do not apply"
        )
    result.overall = json_safe(_figures(overall))
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

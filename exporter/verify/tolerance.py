"""What the one judge (:func:`exporter.verify.verdict.judge`) judges by: profiles and figures.

Optimum only warns and Polygraphy's 1e-5 default is too strict for fp16, so each artifact
precision has its own profile: elementwise logit tolerances plus top-1 agreement (and, for
int8, the held-out accuracy change). Users may override atol/rtol/min_top1. This module holds
the profiles (:func:`profile_for`), the elementwise figures (:func:`compare`), the decision
rules (:func:`gate`), the paired accuracy interval and the one NaN rule for argmax
(:func:`top1_classes`); callers outside ``verify`` use :func:`~exporter.verify.verdict.judge`.

A model that is *not* the same function (a pruned and distilled variant) cannot be held to a
logit tolerance: it is judged by the ``task`` profile instead, at the task level only: held-out
accuracy within a budget of the reference's (with the paired 95 % confidence interval of the
difference, :func:`accuracy_difference`) and top-1 agreement with the reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from exporter.core.config import PRUNED_VARIANTS, check_tolerance_overrides
from exporter.core.errors import UsageError

TASK = "task"  # the profile of variants that are not the same function (pruned)


def profile_name(precision: str, variant: str | None) -> str:
    """Which profile judges an artifact: ``task`` for a pruned variant, else its precision."""
    return TASK if variant in PRUNED_VARIANTS else precision


@dataclass(frozen=True)
class Tolerance:
    """Gate thresholds for one artifact precision.

    Attributes:
        precision: the profile's name.
        atol: absolute tolerance on logits; None = not gated elementwise (int8).
        rtol: relative tolerance on logits (``|c - r| <= atol + rtol * |r|`` elementwise).
        atol_scaled: when True ``atol`` is a fraction of the reference's logit scale
            (max |logit| of the batch, at least 1): half precision errors grow with it.
        min_top1: minimum fraction of inputs whose top-1 class agrees with the reference.
        max_accuracy_drop_points: largest allowed drop of held-out accuracy, in points.
    """

    precision: str
    atol: float | None
    rtol: float | None
    atol_scaled: bool = False
    min_top1: float = 1.0
    max_accuracy_drop_points: float | None = None
    same_function: bool = True  # False: a different model, judged at the task level only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def effective_atol(self, reference: np.ndarray) -> float | None:
        """The absolute tolerance for this reference batch (scaled when ``atol_scaled``)."""
        if self.atol is None:
            return None
        if not self.atol_scaled:
            return self.atol
        scale = max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
        return self.atol * scale


PROFILES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", atol=1e-4, rtol=1e-3, min_top1=1.0),
    "fp16": Tolerance("fp16", atol=5e-2, rtol=5e-2, atol_scaled=True, min_top1=0.995),
    "bf16": Tolerance("bf16", atol=5e-2, rtol=5e-2, atol_scaled=True, min_top1=0.995),
    "int8": Tolerance("int8", atol=None, rtol=None, min_top1=0.99, max_accuracy_drop_points=0.5),
    # A smaller model distilled from the reference: no logit tolerance applies; the budget
    # (``tlx optimize --max-drop``) and the agreement floor (``--min-agreement``) do.
    TASK: Tolerance(
        TASK,
        atol=None,
        rtol=None,
        min_top1=0.9,
        max_accuracy_drop_points=1.0,
        same_function=False,
    ),
}


# fp32 on CUDA with TF32 off still sums in another order than the CPU (cuDNN/cuBLAS pick
# algorithms by shape): the error grows with the logits' magnitude, so atol is a fraction of
# the batch's logit scale there; rtol and top-1 stay as strict as on the CPU.
DEVICE_PROFILES: dict[tuple[str, str], Tolerance] = {
    ("cuda", "fp32"): Tolerance("fp32", atol=1e-4, rtol=1e-3, atol_scaled=True, min_top1=1.0),
}


def profile_for(
    precision: str,
    *,
    device: str = "cpu",
    atol: float | None = None,
    rtol: float | None = None,
    min_top1: float | None = None,
    max_accuracy_drop_points: float | None = None,
) -> Tolerance:
    """The profile of ``precision`` on ``device`` with the user's overrides applied.

    Raises:
        UsageError: unknown precision or an override out of range.
    """
    if precision not in PROFILES:
        raise UsageError(
            f"no tolerance profile for precision {precision!r}; known: {', '.join(PROFILES)}"
        )
    kind = "cuda" if device.startswith("cuda") else device
    tol = DEVICE_PROFILES.get((kind, precision), PROFILES[precision])
    check_tolerance_overrides(atol, rtol, min_top1)  # VerifyConfig's rule, for any caller
    changes: dict[str, Any] = {}
    if not tol.same_function:
        # No logit tolerance applies to a different model: --atol/--rtol are not for it.
        atol = rtol = None
    if atol is not None:
        # An explicit atol is absolute: the user said how many logit units they accept.
        changes.update(atol=atol, atol_scaled=False)
    if rtol is not None:
        changes["rtol"] = rtol
    if min_top1 is not None:
        changes["min_top1"] = min_top1
    if max_accuracy_drop_points is not None:
        changes["max_accuracy_drop_points"] = max_accuracy_drop_points
    return replace(tol, **changes)


@dataclass
class Comparison:
    """Elementwise and decision-level agreement of one candidate with the reference."""

    n: int
    max_abs_error: float
    mean_abs_error: float
    p99_abs_error: float
    max_rel_error: float
    min_cosine_similarity: float
    top1_agreement: float
    top1_ties_n: int
    nonfinite_n: int
    within_tolerance_fraction: float | None
    worst_excess: float | None  # max(|c - r| - (atol + rtol|r|)); > 0 means out of tolerance


def compare(reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> Comparison:
    """Compare two ``(batch, classes)`` logit arrays under ``tol``.

    A top-1 disagreement counts only when the reference itself separates the two classes
    by more than the tolerance: when the reference's top two logits tie within numeric
    noise, either answer is right (these are reported as ``top1_ties_n``).
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference's {reference.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    nonfinite = int(np.size(cand) - np.count_nonzero(np.isfinite(cand)))
    # NaN must never look like agreement: replace it by +inf error below.
    diff = np.where(np.isfinite(cand), np.abs(cand - ref), np.inf)
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    num = np.sum(np.nan_to_num(cand, nan=0.0, posinf=0.0, neginf=0.0) * ref, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(
        np.nan_to_num(cand, nan=0.0, posinf=0.0, neginf=0.0), axis=1
    )
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    cos = np.where(np.all(np.isfinite(cand), axis=1), cos, -1.0)

    atol = tol.effective_atol(reference)
    rtol = tol.rtol or 0.0
    slack = (atol or 0.0) + rtol * np.abs(ref)
    ref_top, cand_top = top1_classes(ref), top1_classes(cand)  # the one NaN rule
    rows = np.arange(ref.shape[0])
    # Tie: the reference scores the candidate's class within tolerance of its own best.
    gap = ref[rows, ref_top] - ref[rows, cand_top]
    tie_slack = 2 * slack[rows, ref_top] if atol is not None else 0.0
    tie = (cand_top != ref_top) & (gap <= tie_slack) & np.all(np.isfinite(cand), axis=1)
    agree = (cand_top == ref_top) | tie
    if atol is not None:
        excess = diff - slack
        within = float(np.mean(excess <= 0)) if excess.size else 1.0
        worst = float(np.max(excess)) if excess.size else 0.0
    else:
        within, worst = None, None
    finite_diff = diff[np.isfinite(diff)]
    return Comparison(
        n=int(ref.shape[0]),
        max_abs_error=float(np.max(diff)) if diff.size else 0.0,
        mean_abs_error=float(np.mean(diff)) if diff.size else 0.0,
        p99_abs_error=float(np.percentile(finite_diff, 99)) if finite_diff.size else 0.0,
        max_rel_error=float(np.max(rel)) if rel.size else 0.0,
        min_cosine_similarity=float(np.min(cos)) if cos.size else 1.0,
        top1_agreement=float(np.mean(agree)) if agree.size else 1.0,
        top1_ties_n=int(np.sum(tie)),
        nonfinite_n=nonfinite,
        within_tolerance_fraction=within,
        worst_excess=worst,
    )


@dataclass(frozen=True)
class AccuracyDifference:
    """Candidate minus reference held-out accuracy, in points, with its 95 % interval.

    Both models answer the same images, so the interval is the paired one: the per-image
    difference of correctness (-1, 0 or 1) has mean ``delta`` and standard error
    ``sd / sqrt(n)`` (normal approximation; McNemar's setting, Dietterich 1998).
    """

    delta_points: float
    ci95_low_points: float
    ci95_high_points: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_difference(
    reference_top1: np.ndarray, candidate_top1: np.ndarray, labels: np.ndarray
) -> AccuracyDifference:
    """The paired accuracy difference of two classifiers on the same labelled images."""
    y = np.asarray(labels)
    d = (np.asarray(candidate_top1) == y).astype(np.float64) - (
        np.asarray(reference_top1) == y
    ).astype(np.float64)
    n = int(d.size)
    if n == 0:
        raise UsageError("accuracy difference of no images")
    mean = float(d.mean())
    half = 1.96 * float(d.std(ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    return AccuracyDifference(
        delta_points=100.0 * mean,
        ci95_low_points=100.0 * (mean - half),
        ci95_high_points=100.0 * (mean + half),
        n=n,
    )


def top1_classes(logits: np.ndarray) -> np.ndarray:
    """Predicted classes, NaN/Inf never winning (the one NaN rule for argmax)."""
    x = np.asarray(logits, dtype=np.float64)
    return np.argmax(np.where(np.isfinite(x), x, -np.inf), axis=1)


@dataclass(frozen=True)
class Verdict:
    """What :func:`gate` decided: every reason the candidate fails (none when it passes)."""

    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


def gate(
    cmp: Comparison,
    tol: Tolerance,
    *,
    top1: float | None = None,
    accuracy_drop_points: float | None = None,
) -> Verdict:
    """Judge a :class:`Comparison` under ``tol``.

    Args:
        cmp: the figures of :func:`compare`.
        tol: the profile the figures were computed under.
        top1: the top-1 agreement to gate instead of ``cmp``'s (the held-out images' for
            profiles without elementwise tolerances).
        accuracy_drop_points: reference minus candidate held-out accuracy, in points; gated
            when the profile has ``max_accuracy_drop_points``.
    """
    failures = []
    top1 = cmp.top1_agreement if top1 is None else top1
    if cmp.nonfinite_n:
        failures.append(f"{cmp.nonfinite_n} NaN/Inf logits")
    if cmp.worst_excess is not None and cmp.worst_excess > 0:
        failures.append(
            f"max abs error {cmp.max_abs_error:.3g} beyond tolerance (atol {tol.atol:g}"
            f"{' x logit scale' if tol.atol_scaled else ''}, rtol {tol.rtol:g}); "
            f"{100 * (1 - (cmp.within_tolerance_fraction or 0)):.2f}% of logits outside"
        )
    if top1 < tol.min_top1:
        failures.append(f"top-1 agreement {100 * top1:.2f}% < {100 * tol.min_top1:.2f}%")
    limit = tol.max_accuracy_drop_points
    # The epsilon keeps "1 image of 200" (0.5000000000000004 points) on the right side.
    drop = accuracy_drop_points
    if limit is not None and drop is not None and drop > limit + 1e-9:
        failures.append(f"held-out accuracy dropped {drop:.2f} points > {limit}")
    return Verdict(tuple(failures))

"""The one judge: :func:`judge` and its one verdict type, :class:`Judgement`.

Every comparison of a candidate's logits with the reference's goes through here: export's
check of the file it just wrote, every ``tlx optimize`` gate, ``tlx verify`` (local
candidates and ``--server``) and ``tlx serve``'s self-check. The profiles, the elementwise
figures and the one NaN rule are :mod:`exporter.verify.tolerance`'s; this module puts them
together into a verdict, so a file one command accepts no other command rejects.

What a profile claims decides what is judged:

- a same-function profile (fp32, fp16, bf16) judges every logit against its tolerance and the
  top-1 agreement on all inputs;
- a profile without elementwise tolerance (int8, and ``task`` for pruned models) makes a
  task-level claim: top-1 agreement is judged on the real held-out images (seeded noise sits
  near decision ties), and the accuracy change on them against the profile's budget, with the
  paired 95 % interval of that change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from exporter.core.errors import UsageError
from exporter.verify.tolerance import (
    AccuracyDifference,
    Comparison,
    Tolerance,
    accuracy_difference,
    compare,
    gate,
    top1_classes,
)


@dataclass(frozen=True)
class Heldout:
    """The real held-out images' part of a comparison: both logits and the true labels."""

    reference: np.ndarray
    candidate: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Judgement:
    """What :func:`judge` decided, with every figure it decided on.

    Attributes:
        profile: the profile judged under.
        comparison: elementwise and top-1 figures over every input given.
        failures: each reason the candidate fails (none when it passes).
        top1_agreement: the agreement the verdict used (held-out images' for task-level
            profiles when there were any, else all inputs').
        top1_basis: which inputs that agreement was measured on.
        images: held-out images, when there were any.
        accuracy_reference / accuracy_candidate: held-out accuracy, fractions.
        difference: candidate minus reference accuracy with its paired 95 % interval.
    """

    profile: Tolerance
    comparison: Comparison
    failures: tuple[str, ...]
    top1_agreement: float
    top1_basis: str
    images: int | None = None
    accuracy_reference: float | None = None
    accuracy_candidate: float | None = None
    difference: AccuracyDifference | None = field(default=None)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def task_checked(self) -> bool:
        """False when a task-level profile had no held-out images to judge on."""
        return self.profile.atol is not None or self.images is not None

    @property
    def max_abs_logit_diff(self) -> float:
        return self.comparison.max_abs_error

    @property
    def accuracy_delta_points(self) -> float | None:
        """Candidate minus reference accuracy, in percentage points."""
        return None if self.difference is None else self.difference.delta_points

    def to_dict(self) -> dict[str, Any]:
        """The record optimize.json and the manifest keep (JSON-safe: NaN/Inf as None)."""
        return {
            "passed": self.passed,
            "images": self.images,
            "top1_agreement": self.top1_agreement,
            "top1_basis": self.top1_basis,
            "accuracy_reference": self.accuracy_reference,
            "accuracy_candidate": self.accuracy_candidate,
            "accuracy_delta_points": self.accuracy_delta_points,
            "max_accuracy_drop_points": self.profile.max_accuracy_drop_points,
            "accuracy_difference": None if self.difference is None else self.difference.to_dict(),
            "profile": self.profile.to_dict(),
            "comparison": json_safe(asdict(self.comparison)),
            "failures": list(self.failures),
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


def judge(
    reference: np.ndarray,
    candidate: np.ndarray,
    profile: Tolerance,
    *,
    heldout: Heldout | None = None,
) -> Judgement:
    """Judge a candidate's logits against the reference's under ``profile``.

    Args:
        reference: the reference's logits ``(n, classes)`` on every input.
        candidate: the candidate's logits on the same inputs.
        profile: from :func:`exporter.verify.tolerance.profile_for`.
        heldout: the real held-out images' logits and labels (may also be part of
            ``reference``/``candidate``): task-level profiles judge top-1 and accuracy there.

    Raises:
        UsageError: the arrays' shapes disagree.
    """
    ref = np.asarray(reference, dtype=np.float32)
    cand = np.asarray(candidate, dtype=np.float32)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise UsageError(f"judge: candidate {cand.shape} differs from the reference {ref.shape}")
    cmp = compare(ref, cand, profile)
    top1, basis = cmp.top1_agreement, "all inputs"
    out: dict[str, Any] = {}
    drop = None
    if heldout is not None:
        h_ref = np.asarray(heldout.reference, dtype=np.float32)
        h_cand = np.asarray(heldout.candidate, dtype=np.float32)
        y = np.asarray(heldout.labels)
        if h_ref.shape != h_cand.shape or y.shape != (h_ref.shape[0],) or not len(y):
            raise UsageError(
                f"judge: held-out reference {h_ref.shape}, candidate {h_cand.shape} and "
                f"labels {y.shape} disagree"
            )
        ref_top1, cand_top1 = top1_classes(h_ref), top1_classes(h_cand)
        out = {
            "images": len(y),
            "accuracy_reference": float(np.mean(ref_top1 == y)),
            "accuracy_candidate": float(np.mean(cand_top1 == y)),
            "difference": accuracy_difference(ref_top1, cand_top1, y),
        }
        drop = -out["difference"].delta_points
        if profile.atol is None:
            top1, basis = compare(h_ref, h_cand, profile).top1_agreement, "heldout"
    elif profile.atol is None:
        basis = "random inputs (not task-checked)"
    verdict = gate(cmp, profile, top1=top1, accuracy_drop_points=drop)
    return Judgement(profile, cmp, verdict.failures, top1, basis, **out)

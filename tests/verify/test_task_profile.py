"""The judge's task-level profile: models that are not the same function (pruned variants)."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.verify.tolerance import (
    TASK,
    accuracy_difference,
    profile_for,
    profile_name,
    top1_classes,
)
from exporter.verify.verdict import Heldout, Judgement, judge


def _judge(
    ref: np.ndarray,
    cand: np.ndarray,
    labels: np.ndarray,
    *,
    precision: str = "int8",
    min_top1_agreement: float | None = None,
    max_accuracy_drop_points: float | None = None,
) -> Judgement:
    """The one judge as optimize calls it: the profile, the held-out images' labels."""
    profile = profile_for(
        precision, min_top1=min_top1_agreement, max_accuracy_drop_points=max_accuracy_drop_points
    )
    return judge(ref, cand, profile, heldout=Heldout(ref, cand, labels))


def test_pruned_variants_are_judged_by_the_task_profile_others_by_precision() -> None:
    assert profile_name("int8", "pruned-int8") == TASK
    assert profile_name("fp32", "pruned") == TASK
    assert profile_name("int8", "fold-int8") == "int8"
    assert profile_name("fp32", None) == "fp32"


def test_no_logit_tolerance_applies_to_a_different_model() -> None:
    tol = profile_for(TASK, atol=1e-6, rtol=1e-6, max_accuracy_drop_points=2.0)
    assert tol.atol is None and tol.rtol is None and not tol.same_function
    assert tol.max_accuracy_drop_points == 2.0
    assert profile_for("fp32", atol=1e-6).atol == 1e-6  # same-function profiles keep it


def test_paired_interval_of_the_accuracy_difference() -> None:
    y = np.zeros(100, dtype=int)
    ref = np.zeros(100, dtype=int)  # 100 % right
    cand = ref.copy()
    cand[:4] = 1  # 4 wrong: -4 points
    d = accuracy_difference(ref, cand, y)
    assert d.delta_points == pytest.approx(-4.0)
    # sd of 96 zeros and 4 minus-ones, over sqrt(100), times 1.96
    sd = np.std(np.r_[np.zeros(96), -np.ones(4)], ddof=1)
    assert d.ci95_low_points == pytest.approx(-4.0 - 196 * sd / 10)
    assert d.ci95_high_points == pytest.approx(-4.0 + 196 * sd / 10)
    same = accuracy_difference(ref, ref, y)
    assert same.delta_points == same.ci95_low_points == same.ci95_high_points == 0.0


def test_nan_never_wins_the_argmax() -> None:
    logits = np.array([[np.nan, 1.0, 0.0], [0.0, np.inf, 5.0], [2.0, 1.0, -np.inf]])
    assert top1_classes(logits).tolist() == [1, 2, 0]


def _logits(classes: np.ndarray, n_classes: int = 3) -> np.ndarray:
    out = np.zeros((len(classes), n_classes), np.float32)
    out[np.arange(len(classes)), classes] = 5.0
    return out


def test_task_gate_passes_within_the_budget_and_fails_beyond_it() -> None:
    labels = np.arange(200) % 3
    reference = _logits(labels)
    wrong = labels.copy()
    wrong[:1] = (labels[:1] + 1) % 3  # one mistake in 200: -0.5 points, 99.5 % agreement
    within = _judge(reference, _logits(wrong) + 3.0, labels, precision=TASK)
    assert within.passed, within.failures  # logits 3.0 away: no tolerance applies
    assert within.difference.delta_points == pytest.approx(-0.5)
    assert within.to_dict()["accuracy_difference"]["delta_points"] == pytest.approx(-0.5)
    wrong[:4] = (labels[:4] + 1) % 3  # four: -2 points
    beyond = _judge(reference, _logits(wrong), labels, precision=TASK)
    assert not beyond.passed
    assert any("dropped 2.00 points > 1.0" in f for f in beyond.failures)
    loose = _judge(reference, _logits(wrong), labels, precision=TASK,
                        max_accuracy_drop_points=3.0)  # fmt: skip
    assert loose.passed


def test_task_gate_holds_the_agreement_floor_even_when_accuracy_holds() -> None:
    labels = np.arange(100) % 2
    reference = _logits(np.where(np.arange(100) < 50, labels, 1 - labels), 2)  # 50 % right
    candidate = _logits(labels, 2)  # 100 % right, but agrees with the reference half the time
    res = _judge(reference, candidate, labels, precision=TASK)
    assert res.accuracy_delta_points > 0
    assert any("agreement" in f for f in res.failures)

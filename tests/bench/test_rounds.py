"""``time_runtimes``: the interleaved rounds the benchmark scripts time with. No timing asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from exporter.bench.measure import rotated, time_runtimes
from exporter.core.errors import UsageError
from exporter.runtimes.base import Artifact, Runtime


class LoggingRuntime(Runtime):
    """Records every prepare and run in a log shared by the runtimes of one test."""

    name: ClassVar[str] = "logging"
    formats: ClassVar[tuple[str, ...]] = ("fake",)

    def __init__(self, label: str, log: list[tuple[str, str]], *, fail_at: int | None = None):
        super().__init__(Artifact(run_dir=Path("."), name=label, format="fake"))
        self.label, self.log, self.fail_at, self.calls = label, log, fail_at, 0

    def load(self) -> None:
        pass

    def prepare(self, x: np.ndarray) -> Any:
        self.log.append(("prepare", self.label))
        return x

    def run(self, prepared: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"{self.label} broke on call {self.calls}")
        self.log.append(("run", self.label))
        return prepared

    def to_numpy(self, output: Any) -> np.ndarray:
        return output


X = np.zeros((1, 3, 8, 8), np.float32)


def _runtimes(labels: str, log: list[tuple[str, str]], **fail: int) -> dict[str, Runtime]:
    return {label: LoggingRuntime(label, log, fail_at=fail.get(label)) for label in labels}


def test_rotated_starts_one_later_each_round() -> None:
    assert rotated("abc", 0) == ["a", "b", "c"]
    assert rotated("abc", 1) == ["b", "c", "a"]
    assert rotated("abc", 5) == ["c", "a", "b"]
    assert rotated([], 3) == []


def test_every_runtime_gets_rounds_times_per_round_samples() -> None:
    log: list[tuple[str, str]] = []
    samples = time_runtimes(_runtimes("abc", log), X, rounds=4, per_round=3, warmup=2)
    assert list(samples) == ["a", "b", "c"]
    assert all(len(s) == 12 for s in samples.values())
    assert all(isinstance(v, float) for s in samples.values() for v in s)
    # Prepared once each; the warm-up calls are run but not sampled.
    assert [e for e in log if e[0] == "prepare"] == [("prepare", k) for k in "abc"]
    assert sum(e[0] == "run" for e in log) == 3 * (2 + 12)


def test_warm_up_in_order_then_rounds_rotate() -> None:
    log: list[tuple[str, str]] = []
    time_runtimes(_runtimes("abc", log), X, rounds=4, per_round=2, warmup=1)
    runs = [label for kind, label in log if kind == "run"]
    warm, timed = runs[:3], runs[3:]
    assert warm == ["a", "b", "c"]
    expected = [label for r in range(4) for label in rotated("abc", r) for _ in range(2)]
    assert timed == expected
    assert expected[:6] == ["a", "a", "b", "b", "c", "c"]  # round 0 starts at a, 1 at b
    assert expected[6:8] == ["b", "b"]


def test_a_failing_runtime_raises_its_own_error_naming_it() -> None:
    log: list[tuple[str, str]] = []
    with pytest.raises(RuntimeError, match="b broke on call 4") as info:
        time_runtimes(_runtimes("abc", log, b=4), X, rounds=3, per_round=1, warmup=2)
    assert "while timing 'b'" in info.value.__notes__


def test_a_runtime_failing_in_warm_up_is_named_too() -> None:
    with pytest.raises(RuntimeError, match="c broke on call 1") as info:
        time_runtimes(_runtimes("abc", [], c=1), X, rounds=1, per_round=1)
    assert info.value.__notes__ == ["while timing 'c'"]


@pytest.mark.parametrize(
    ("labels", "rounds", "per_round", "warmup", "match"),
    [
        ("", 1, 1, 0, "no runtimes"),
        ("a", 0, 1, 0, "rounds=0"),
        ("a", 1, 0, 0, "per_round=0"),
        ("a", 1, 1, -1, "warmup=-1"),
    ],
)
def test_bad_arguments_are_a_usage_error(
    labels: str, rounds: int, per_round: int, warmup: int, match: str
) -> None:
    log: list[tuple[str, str]] = []
    with pytest.raises(UsageError, match=match):
        time_runtimes(_runtimes(labels, log), X, rounds=rounds, per_round=per_round, warmup=warmup)
    assert log == []  # nothing ran

"""The search of ``tlx tune``: which serving settings to try, in what order, and the winner.

Free of timers and models: the measuring function is passed in (the in-process load test in
``tune.py``, or a fake in the tests), and so is the clock that keeps the search in its
budget. The space, within ``cpus`` cores in total (instances × threads per instance ≤ cpus):

1. **baseline**: ``tlx serve``'s defaults on those cores (its instance plan, max batch 64,
   queue delay 1000 us) — what the winner must beat.
2. **cores**: every instances × threads split of the cores, at a middle batcher setting.
3. **batcher**: max batch × queue delay around the best two splits.
4. **confirm**: the best trial and the baseline again, interleaved, ``CONFIRM_ROUNDS``
   times; the best is kept only when its median throughput is at least the baseline's and
   its median p99 at most ``1 + P99_TOLERANCE`` times the baseline's, else the baseline wins.

Trials whose p99 exceeds the baseline's by more than the tolerance never win. A stage that
would run past the budget is cut short (the confirmation keeps its share of the budget).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_BATCHES = (1, 8, 32)
QUEUE_DELAYS_US = (0, 500, 2000)
# The (max batch, queue delay) pairs tried; a max batch of 1 never waits.
BATCHER = tuple((b, d) for b in MAX_BATCHES for d in (QUEUE_DELAYS_US if b > 1 else (0,)))
MIDDLE = (8, 500)  # (max batch, queue delay) while the cores are split
MAX_INSTANCES = 8  # each instance holds its own copy of the model
CONFIRM_SHARE = 0.3  # of the budget, kept for the interleaved confirmation
CONFIRM_ROUNDS = 3
P99_TOLERANCE = 0.10  # how much worse than the baseline's a winner's p99 may be


@dataclass(frozen=True)
class Trial:
    """One setting of the server: what ``tune.json``'s ``plan`` holds."""

    instances: int
    threads_per_instance: int
    max_batch: int
    queue_delay_us: int

    @property
    def cores(self) -> int:
        return self.instances * self.threads_per_instance

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """What one measuring window gave (None when nothing completed)."""

    throughput_img_s: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    requests: int = 0
    avg_batch: float | None = None
    error: str | None = None


@dataclass
class TrialRecord:
    """A trial, the stage that ran it, and its measurement (``tune.json``'s ``trials``)."""

    trial: Trial
    stage: str
    measurement: Measurement

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.trial.to_dict(), **asdict(self.measurement)}


@dataclass
class SearchResult:
    """The winner, the baseline it was compared with, and every trial."""

    plan: Trial
    baseline: Trial
    trials: list[TrialRecord] = field(default_factory=list)
    confirmation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


Measure = Callable[[Trial, float], Measurement]  # (trial, seconds) -> measurement


def baseline_trial(cpus: int) -> Trial:
    """``tlx serve``'s defaults on ``cpus`` cores: its instance plan, max batch, queue delay."""
    from exporter.core.config import ServeConfig
    from exporter.serve.server import instance_plan

    defaults = ServeConfig()
    instances, threads = instance_plan(defaults, cores=cpus)
    return Trial(instances, threads or 1, defaults.max_batch, defaults.max_queue_delay_us)


def core_splits(cpus: int) -> list[tuple[int, int]]:
    """(instances, threads) pairs using the cores: ``cpus // i`` threads for ``i`` instances."""
    pairs = {(i, max(1, cpus // i)) for i in range(1, min(cpus, MAX_INSTANCES) + 1)}
    return sorted(pairs)


def _score(m: Measurement) -> float:
    return m.throughput_img_s or 0.0


def search(
    measure: Measure,
    *,
    cpus: int,
    budget_s: float,
    clock: Callable[[], float],
    min_window_s: float = 1.0,
) -> SearchResult:
    """Search the serving settings within ``cpus`` cores and about ``budget_s`` seconds.

    ``clock`` (seconds, monotonic) is injected so the tests need no real time.
    """
    start = clock()
    base = baseline_trial(cpus)
    splits = core_splits(cpus)
    planned = 1 + len(splits) + 2 * len(BATCHER) + 2 * CONFIRM_ROUNDS
    window = max(min_window_s, budget_s / planned)
    result = SearchResult(plan=base, baseline=base)
    seen: dict[Trial, Measurement] = {}

    def left() -> float:
        return budget_s - (clock() - start)

    def run(trial: Trial, stage: str) -> Measurement:
        m = measure(trial, window)
        result.trials.append(TrialRecord(trial, stage, m))
        seen.setdefault(trial, m)
        return m

    base_m = run(base, "baseline")
    reserve = CONFIRM_SHARE * budget_s
    for i, t in splits:
        trial = Trial(i, t, *MIDDLE)
        if trial not in seen and left() - window >= reserve:
            run(trial, "cores")
    ranked = sorted(
        {(t.instances, t.threads_per_instance) for t in seen}, key=lambda p: -_best_for(seen, p)
    )
    for i, t in ranked[:2]:
        for b, d in BATCHER:
            trial = Trial(i, t, b, d)
            if trial not in seen and left() - window >= reserve:
                run(trial, "batcher")
    best = _pick(seen, base, base_m)
    if len(seen) < 1 + len(splits):
        result.notes.append(f"the budget ({budget_s:g} s) cut the search short")
    if best == base:
        result.notes.append("no setting beat the serve defaults within the p99 limit")
        return result
    result.plan, result.confirmation = _confirm(run, best, base, left=left, window=window)
    if result.plan == base:
        result.notes.append(
            f"the confirmation rounds kept the serve defaults ({result.confirmation['verdict']})"
        )
    return result


def _pick(seen: dict[Trial, Measurement], base: Trial, base_m: Measurement) -> Trial:
    """The fastest trial whose p99 stays within the tolerance of the baseline's."""
    limit = (base_m.latency_ms_p99 or float("inf")) * (1 + P99_TOLERANCE)
    eligible = [
        (tr, m)
        for tr, m in seen.items()
        if m.error is None and m.throughput_img_s and (m.latency_ms_p99 or 0) <= limit
    ]
    return max(eligible, key=lambda tm: _score(tm[1]))[0] if eligible else base


def _best_for(seen: dict[Trial, Measurement], split: tuple[int, int]) -> float:
    return max(
        (_score(m) for t, m in seen.items() if (t.instances, t.threads_per_instance) == split),
        default=0.0,
    )


def _confirm(
    run: Callable[[Trial, str], Measurement],
    best: Trial,
    base: Trial,
    *,
    left: Callable[[], float],
    window: float,
) -> tuple[Trial, dict[str, Any]]:
    """Best and baseline interleaved; the best wins on medians (throughput, p99) or not at all."""
    got: dict[str, list[Measurement]] = {"best": [], "baseline": []}
    for r in range(CONFIRM_ROUNDS):
        if r > 0 and left() < 2 * window:
            break
        order = [("best", best), ("baseline", base)]
        for label, trial in order if r % 2 == 0 else reversed(order):
            got[label].append(run(trial, "confirm"))

    def median(label: str, key: str) -> float | None:
        values = [getattr(m, key) for m in got[label] if getattr(m, key) is not None]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {"rounds": len(got["best"])}
    for label in got:
        summary[label] = {
            "throughput_img_s_median": median(label, "throughput_img_s"),
            "latency_ms_p99_median": median(label, "latency_ms_p99"),
        }
    b, d = summary["best"], summary["baseline"]
    faster = (b["throughput_img_s_median"] or 0) >= (d["throughput_img_s_median"] or 0)
    p99_ok = (b["latency_ms_p99_median"] or float("inf")) <= (
        d["latency_ms_p99_median"] or float("inf")
    ) * (1 + P99_TOLERANCE)
    summary["verdict"] = (
        "tuned kept"
        if faster and p99_ok
        else ("slower than the defaults" if not faster else "p99 beyond the limit")
    )
    return (best if faster and p99_ok else base), summary

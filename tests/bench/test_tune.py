"""``tlx tune``: the search on a fake timer, tune.json, and the plan as serve/Triton defaults."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.bench.tune import measure_in_process, tune_run
from exporter.bench.tune_search import Measurement, Trial, baseline_trial, core_splits, search
from exporter.cli import app
from exporter.core.config import TuneConfig
from exporter.core.errors import EXIT_OK, InputFileError, UsageError
from exporter.core.runreports import TUNE_JSON, read_tune, serve_settings


class FakeClock:
    """Time that passes only when a trial "measures"."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_timer(clock: FakeClock, score, calls: list[Trial] | None = None):
    """A measure function: advances the clock by the window, returns ``score(trial, n)``."""
    seen = calls if calls is not None else []

    def measure(trial: Trial, seconds: float) -> Measurement:
        clock.now += seconds
        seen.append(trial)
        throughput, p99 = score(trial, len(seen))
        return Measurement(throughput, p99 / 2, p99, requests=100)

    return measure


def prefers(best: Trial, *, p99: float = 10.0):
    """Throughput peaks at ``best`` and falls with the distance to it."""

    def score(trial: Trial, _n: int) -> tuple[float, float]:
        distance = (
            abs(trial.instances - best.instances)
            + abs(trial.threads_per_instance - best.threads_per_instance)
            + abs(trial.max_batch - best.max_batch) / 8
            + abs(trial.queue_delay_us - best.queue_delay_us) / 500
        )
        return 100.0 / (1 + distance), p99

    return score


def test_search_finds_the_best_setting_within_the_cores() -> None:
    clock, calls = FakeClock(), []
    best = Trial(4, 1, 32, 500)
    result = search(fake_timer(clock, prefers(best), calls), cpus=4, budget_s=120, clock=clock)
    assert result.plan == best
    assert result.baseline == baseline_trial(4) == Trial(2, 2, 64, 1000)
    assert calls[0] == result.baseline  # the defaults are measured first
    assert all(t.cores <= 4 for t in calls)
    stages = [t.stage for t in result.trials]
    assert stages[0] == "baseline" and "cores" in stages and "batcher" in stages
    assert stages.count("confirm") == 6 and result.confirmation["verdict"] == "tuned kept"
    assert {(i, t) for i, t in core_splits(4)} <= {
        (r.trial.instances, r.trial.threads_per_instance) for r in result.trials
    }
    assert clock.now <= 120 + 1.0  # within the budget (one window of slack)


def test_one_cpu_means_one_core_in_total() -> None:
    clock, calls = FakeClock(), []
    result = search(
        fake_timer(clock, prefers(Trial(1, 1, 8, 0)), calls), cpus=1, budget_s=60, clock=clock
    )
    assert {t.cores for t in calls} == {1}
    assert result.plan.instances * result.plan.threads_per_instance == 1


def test_a_faster_setting_with_a_much_worse_p99_never_wins() -> None:
    clock = FakeClock()
    base = baseline_trial(2)

    def score(trial: Trial, _n: int) -> tuple[float, float]:
        if trial == base:
            return 50.0, 10.0
        return (500.0, 20.0) if trial.max_batch == 32 else (40.0, 10.0)  # 32: p99 doubled

    result = search(fake_timer(clock, score), cpus=2, budget_s=120, clock=clock)
    assert result.plan == base
    assert any(r.trial.max_batch == 32 for r in result.trials)  # tried, not chosen
    assert "no setting beat the serve defaults" in " ".join(result.notes)


def test_confirmation_keeps_the_defaults_when_the_winner_does_not_hold_up() -> None:
    clock = FakeClock()
    base, lucky = baseline_trial(2), Trial(1, 2, 8, 500)
    confirming = {"on": False}

    def score(trial: Trial, _n: int) -> tuple[float, float]:
        if trial == lucky:
            return (40.0 if confirming["on"] else 90.0), 10.0  # one lucky window
        return (50.0 if trial == base else 30.0), 10.0

    measure = fake_timer(clock, score)

    def watching(trial: Trial, seconds: float) -> Measurement:
        m = measure(trial, seconds)
        if trial == lucky:
            confirming["on"] = True
        return m

    result = search(watching, cpus=2, budget_s=120, clock=clock)
    assert result.plan == base
    assert result.confirmation["verdict"] == "slower than the defaults"
    assert result.confirmation["rounds"] == 3


def test_a_small_budget_cuts_the_search_short() -> None:
    clock = FakeClock()
    result = search(
        fake_timer(clock, prefers(Trial(8, 1, 32, 0))), cpus=8, budget_s=10, clock=clock
    )
    searched = [r for r in result.trials if r.stage != "confirm"]
    assert len(searched) < 1 + len(core_splits(8))
    assert clock.now <= 10 + 2 * 1.0  # the confirmation's first round may end past it
    assert "cut the search short" in " ".join(result.notes)


# --- the in-process load test (no timing asserted) ------------------------------------------


class SleepyPredictor:
    """Records the batch sizes it was given."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(batch.shape[0])
        time.sleep(0.002)
        return np.zeros((batch.shape[0], 2), np.float32)


def test_in_process_batcher_respects_max_batch_and_counts_requests() -> None:
    predictors = [SleepyPredictor(), SleepyPredictor()]
    trial = Trial(2, 1, 4, 2000)
    image = np.zeros((1, 3, 4, 4), np.float32)
    m = measure_in_process(predictors, trial, concurrency=8, seconds=0.5, image=image)
    assert m.error is None and m.requests > 0 and m.throughput_img_s > 0
    assert m.latency_ms_p50 <= m.latency_ms_p99
    sizes = [b for p in predictors for b in p.batches]
    assert sizes and max(sizes) <= 4 and max(sizes) > 1  # the batcher formed batches
    assert all(p.batches for p in predictors)  # both instances served


# --- tune.json and what reads it ---------------------------------------------------------


@pytest.fixture
def tuned_run(onnx_run: Path, tmp_path: Path, link_run) -> Path:
    run = link_run(onnx_run, tmp_path / "run")
    clock = FakeClock()
    measure = fake_timer(clock, prefers(Trial(1, 1, 8, 500)))
    result = tune_run(run, TuneConfig(cpus=1, budget_s=30), measure=measure)
    assert result.path == run / TUNE_JSON
    return run


def test_tune_json_has_the_plan_and_every_trial(tuned_run: Path) -> None:
    data = json.loads((tuned_run / TUNE_JSON).read_text())
    assert data["command"] == "tune" and data["artifact"] == "model.onnx"
    assert data["runtime"] == "ort-cpu" and data["cpus"] == 1 and data["cpus_source"] == "--cpus"
    plan = data["plan"]
    assert set(plan) == {"instances", "threads_per_instance", "max_batch", "queue_delay_us"}
    assert plan["instances"] * plan["threads_per_instance"] == 1
    assert data["trials"] and all(
        t["instances"] * t["threads_per_instance"] == 1 for t in data["trials"]
    )
    assert data["trials"][0]["stage"] == "baseline"
    assert isinstance(data["machine"]["cpus_available"], int)
    assert read_tune(tuned_run)["plan"] == plan


def test_the_plan_is_the_default_and_a_flag_wins(tuned_run: Path) -> None:
    plan = read_tune(tuned_run)["plan"]
    none = {"max_batch": None, "max_queue_delay_us": None, "instances": None, "threads": None}
    got, from_tune = serve_settings(tuned_run, none, device="cpu", variant=None, runtime=None)
    assert from_tune and got == {
        "max_batch": plan["max_batch"],
        "max_queue_delay_us": plan["queue_delay_us"],
        "instances": plan["instances"],
        "threads": plan["threads_per_instance"],
    }
    flags = {**none, "max_batch": 3, "instances": 2}
    got, _ = serve_settings(tuned_run, flags, device="cpu", variant=None, runtime=None)
    assert got["max_batch"] == 3 and got["instances"] == 2
    assert got["threads"] is None  # tuned threads belong to the tuned instance count
    # Another artifact, runtime or device: the plan does not apply.
    for kw in ({"variant": "fold-int8"}, {"runtime": "openvino"}, {"device": "cuda"}):
        args = {"device": "cpu", "variant": None, "runtime": None, **kw}
        assert serve_settings(tuned_run, none, **args) == (none, False)
    # The packaged Triton repository: the same settings, no runtime (the backend runs it).
    triton, _ = serve_settings(
        tuned_run, {**none, "max_queue_delay_us": 7}, device="cpu", variant=None
    )
    assert triton == {
        "max_batch": plan["max_batch"],
        "max_queue_delay_us": 7,
        "instances": plan["instances"],
        "threads": plan["threads_per_instance"],
    }


def test_serve_takes_the_plan_and_a_flag_wins(
    tuned_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.serve.server as server

    seen = []

    def fake_start(run, cfg, stop=None):
        seen.append(cfg)
        raise UsageError("stopped before a server starts")

    monkeypatch.setattr(server, "start_server", fake_start)
    plan = read_tune(tuned_run)["plan"]
    assert CliRunner().invoke(app, ["serve", str(tuned_run)]).exit_code == 2
    tuned = seen[-1]
    assert (tuned.max_batch, tuned.max_queue_delay_us) == (
        plan["max_batch"],
        plan["queue_delay_us"],
    )
    assert (tuned.instances, tuned.threads) == (plan["instances"], plan["threads_per_instance"])
    assert CliRunner().invoke(app, ["serve", str(tuned_run), "--max-batch", "3"]).exit_code == 2
    assert seen[-1].max_batch == 3 and seen[-1].max_queue_delay_us == plan["queue_delay_us"]


def test_triton_export_takes_the_plan(tuned_run: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    data = json.loads((tuned_run / TUNE_JSON).read_text())
    data["plan"] = {
        "instances": 1,
        "threads_per_instance": 1,
        "max_batch": 8,
        "queue_delay_us": 777,
    }
    (tuned_run / TUNE_JSON).write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["export", str(tuned_run), "--format", "triton"])
    assert result.exit_code == EXIT_OK, result.stderr
    config = (tuned_run / "triton" / "vgg16" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in config and "max_queue_delay_microseconds: 777" in config


def test_corrupt_tune_json_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / TUNE_JSON).write_text('{"plan": {"instances": "two"}}')
    with pytest.raises(InputFileError, match=r"tune\.json: not a tune report"):
        read_tune(tmp_path)


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--cpus"):
        TuneConfig(cpus=0)
    with pytest.raises(UsageError, match="--budget"):
        TuneConfig(budget_s=1)


def test_cli_tune_for_real_on_one_cpu(onnx_run: Path, tmp_path: Path, link_run) -> None:
    run = link_run(onnx_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["tune", str(run), "--cpus", "1", "--budget", "6"])
    assert result.exit_code == EXIT_OK, result.stderr
    assert "plan: 1 instance(s) x 1 thread(s)" in result.stdout and "baseline" in result.stdout
    data = json.loads((run / TUNE_JSON).read_text())
    assert data["plan"]["instances"] * data["plan"]["threads_per_instance"] == 1
    for t in data["trials"]:  # measured, or the reason it was not (a busy machine)
        assert (t["throughput_img_s"] or 0) > 0 or t["error"], t

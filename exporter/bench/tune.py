"""``tlx tune``: the serving settings that give this run's artifact the most throughput here.

Searches instances × threads per instance × max batch × queue delay (``tune_search.py``)
for the artifact ``tlx serve`` would choose, within the cores the process may use (or
``--cpus``: a target pod's limit). Writes ``RUN/tune.json``; ``tlx serve`` and ``tlx export
--format triton`` then take its ``plan`` as their defaults (``core/runreports.py``).

Each trial is timed in this process (:func:`measure_in_process`): starting a Triton server
per trial costs seconds of start-up and warm-up each, more than a 60 s budget can hold, so a
trial runs what ``tlx serve`` runs inside Triton: ``instances`` predictors (one session each,
``threads_per_instance`` threads), a dynamic batcher in front of them (a request waits up to
``queue_delay_us`` for others, up to ``max_batch`` images: Triton's rule), and
``concurrency`` client threads that each keep one single-image request in flight (closed
loop, as ``tlx loadtest`` does against a server). ONNX Runtime and OpenVINO release the GIL
while they compute, so the instances run in parallel. What this leaves out is Triton's own
cost (HTTP, the IPC to its Python backend), the same for every trial: the ranking holds,
the absolute numbers are higher than a server's.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from exporter.bench.measure import Completions
from exporter.bench.tune_search import Measure, Measurement, SearchResult, Trial, search
from exporter.core.config import TuneConfig, to_dict
from exporter.core.machine import machine_facts, usable_cpus
from exporter.core.report import Progress, write_report_json
from exporter.core.runfolder import TUNE_JSON, Run, open_run
from exporter.core.runlock import locks_run

TUNE_SCHEMA_VERSION = 1
MEASUREMENT = (
    "in-process: Triton's dynamic-batcher rule and closed-loop single-image clients around "
    "one predictor per instance, without the server's HTTP and IPC (the same for every trial)"
)
WARMUP_SHARE = 0.2  # of each window: requests completed then are not counted
# A window is stretched (up to MAX_STRETCH times) until this many requests were counted: a
# slow setting on a busy machine would otherwise report nothing, or a p99 of a few samples.
MIN_COUNTED = 20
MAX_STRETCH = 4


@dataclass
class TuneResult:
    """What ``tlx tune`` tried and chose; :meth:`to_dict` is ``tune.json``."""

    run_dir: Path
    config: TuneConfig
    artifact: str
    variant: str | None
    runtime: str
    cpus: int
    cpus_source: str
    search: SearchResult
    machine: dict[str, Any] = field(default_factory=machine_facts)
    created_at: str = ""
    path: Path | None = None

    @property
    def gate_failures(self) -> list[str]:
        return []

    def summary(self) -> list[str]:
        """The plan chosen and where it went, then the search's notes."""
        plan = self.search.plan
        return [
            f"plan: {plan.instances} instance(s) x {plan.threads_per_instance} thread(s), "
            f"max batch {plan.max_batch}, queue delay {plan.queue_delay_us} us "
            f"({plan.cores} of {self.cpus} CPUs); written to {self.path}",
            *(f"note: {note}" for note in self.search.notes),
        ]

    def to_dict(self) -> dict[str, Any]:
        s = self.search
        return {
            "schema_version": TUNE_SCHEMA_VERSION,
            "command": "tune",
            "created_at": self.created_at,
            "run_dir": str(self.run_dir),
            "config": to_dict(self.config),
            "artifact": self.artifact,
            "variant": self.variant,
            "runtime": self.runtime,
            "device": "cpu",
            "cpus": self.cpus,
            "cpus_source": self.cpus_source,
            "concurrency": self.config.concurrency,
            "measurement": MEASUREMENT,
            "plan": s.plan.to_dict(),
            "baseline": s.baseline.to_dict(),
            "confirmation": s.confirmation,
            "notes": s.notes,
            "trials": [t.to_dict() for t in s.trials],
            "machine": self.machine,
        }


class _Pool:
    """Loaded predictors of one thread count, grown on demand (other counts closed first)."""

    def __init__(self, run: Any, variant: str, runtime: str) -> None:
        self.run, self.variant, self.runtime = run, variant, runtime
        self.threads: int | None = None
        self.predictors: list[Any] = []

    def get(self, instances: int, threads: int) -> list[Any]:
        from exporter.serve.predictor import load

        if threads != self.threads:
            self.close()
            self.threads = threads
        while len(self.predictors) < instances:
            p = load(self.run, variant=self.variant, runtime=self.runtime, threads=threads)
            self.predictors.append(p)
            p.logits(np.zeros((1, 3, p.image_size, p.image_size), np.float32))  # warm
        return self.predictors[:instances]

    def close(self) -> None:
        for p in self.predictors:
            p.close()
        self.predictors = []


@locks_run("tune")
def tune_run(
    run_dir: Run | str | Path,
    cfg: TuneConfig,
    *,
    progress: Progress | None = None,
    measure: Measure | None = None,
) -> TuneResult:
    """Search the serving settings of the run's chosen artifact and write ``RUN/tune.json``.

    ``measure`` replaces the in-process load test (tests pass a fake).

    Raises:
        InputFileError / UsageError: bad run, variant or runtime (exit 2).
        RuntimeUnavailable: the runtime cannot run here (exit 3).
    """
    from exporter.serve.choice import choose

    info = open_run(run_dir)
    choice = choose(info, device="cpu", variant=cfg.variant, runtime=cfg.runtime)
    art = choice.artifact
    cpus = cfg.cpus or usable_cpus()
    report = progress or (lambda *_: None)
    pool = _Pool(info, art.name, choice.runtime)
    image = np.random.default_rng(cfg.seed).standard_normal(
        (1, 3, art.image_size, art.image_size), dtype=np.float32
    )

    def in_process(trial: Trial, seconds: float) -> Measurement:
        try:
            predictors = pool.get(trial.instances, trial.threads_per_instance)
        except MemoryError:
            return Measurement(
                None, None, None, error=f"out of memory at {trial.instances} instances"
            )
        return measure_in_process(
            predictors, trial, concurrency=cfg.concurrency, seconds=seconds, image=image
        )

    timer = measure or in_process

    def counted(trial: Trial, seconds: float) -> Measurement:
        report(f"trial {trial.instances}x{trial.threads_per_instance} b{trial.max_batch}", 0, 1)
        return timer(trial, seconds)

    try:
        found = search(
            counted,
            cpus=cpus,
            budget_s=cfg.budget_s,
            clock=time.perf_counter,
            min_window_s=cfg.min_window_s,
        )
    finally:
        pool.close()
    result = TuneResult(
        run_dir=info.run_dir,
        config=cfg,
        artifact=art.name,
        variant=art.metadata.get("variant"),
        runtime=choice.runtime,
        cpus=cpus,
        cpus_source="--cpus" if cfg.cpus else "usable cores (affinity and cgroup quota)",
        search=found,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if cfg.cpus and cfg.cpus > usable_cpus():
        found.notes.append(
            f"--cpus {cfg.cpus} is more than the {usable_cpus()} cores this process may use "
            "here: the trials were measured oversubscribed"
        )
    result.path = info.run_dir / TUNE_JSON
    write_report_json(result.path, result.to_dict())
    return result


# --- the timer: an in-process closed-loop load test with a dynamic batcher ---------------


@dataclass
class _Request:
    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def _collect(requests: queue.Queue, first: _Request, trial: Trial) -> list[_Request]:
    """Triton's dynamic batcher: wait up to the queue delay for up to ``max_batch`` requests."""
    batch = [first]
    deadline = time.perf_counter() + trial.queue_delay_us / 1e6
    while len(batch) < trial.max_batch:
        remaining = deadline - time.perf_counter()
        try:
            batch.append(
                requests.get(timeout=remaining) if remaining > 0 else requests.get_nowait()
            )
        except queue.Empty:
            break
    return batch


def _instance(
    predictor: Any, requests: queue.Queue, trial: Trial, stop: threading.Event, batches: list[int]
) -> None:
    while not stop.is_set():
        try:
            first = requests.get(timeout=0.05)
        except queue.Empty:
            continue
        batch = _collect(requests, first, trial)
        try:
            predictor.logits(np.concatenate([r.x for r in batch]))
        except Exception as exc:  # recorded; the trial reports it instead of hanging
            for r in batch:
                r.error = f"{exc.__class__.__name__}: {exc}"
        batches.append(len(batch))  # list.append is atomic
        for r in batch:
            r.done.set()


def _client(
    x: np.ndarray, requests: queue.Queue, stop: threading.Event, record: Completions
) -> None:
    while not stop.is_set():
        req = _Request(x)
        t0 = time.perf_counter()
        requests.put(req)
        while not req.done.wait(0.1):
            if stop.is_set():
                return
        t1 = time.perf_counter()
        record.add(t1, t1 - t0, req.error)


def measure_in_process(
    predictors: list[Any], trial: Trial, *, concurrency: int, seconds: float, image: np.ndarray
) -> Measurement:
    """Run the closed loop for ``seconds``; the first :data:`WARMUP_SHARE` is not counted.

    ``predictors``: one loaded predictor per instance, each with the trial's threads;
    ``concurrency`` client threads each keep one request of ``image`` in flight.
    """
    requests: queue.Queue = queue.Queue()
    stop, record, batches = threading.Event(), Completions(), []
    workers = [
        threading.Thread(target=_instance, args=(p, requests, trial, stop, batches), daemon=True)
        for p in predictors
    ]
    workers += [
        threading.Thread(target=_client, args=(image, requests, stop, record), daemon=True)
        for _ in range(concurrency)
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    counted_from = start + WARMUP_SHARE * seconds
    time.sleep(seconds)
    while record.between(counted_from, float("inf"))[0].size < MIN_COUNTED and (
        time.perf_counter() < start + MAX_STRETCH * seconds
    ):
        time.sleep(0.05)
    end = time.perf_counter()
    stop.set()
    for w in workers:
        w.join(timeout=30)
    lat = record.between(counted_from, end)[0] * 1e3
    if record.error_samples:
        return Measurement(None, None, None, record.count(), error=record.error_samples[0])
    if lat.size == 0:
        return Measurement(None, None, None, 0, error="no request completed in the window")
    span = end - counted_from
    return Measurement(
        throughput_img_s=float(lat.size / span),
        latency_ms_p50=float(np.percentile(lat, 50)),
        latency_ms_p99=float(np.percentile(lat, 99)),
        requests=int(lat.size),
        avg_batch=float(np.mean(batches)) if batches else None,
    )

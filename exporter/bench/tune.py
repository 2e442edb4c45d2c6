"""``tlx tune``: the serving settings that give this run's artifact the most throughput here.

Searches instances × threads per instance × max batch × queue delay (``tune_search.py``)
for the artifact ``tlx serve`` would choose, within the cores the process may use (or
``--cpus``: a target pod's limit), measuring each trial with the in-process load test
(``tune_load.py``: Triton's batcher and closed-loop clients, without the server around
them). Writes ``RUN/tune.json``; ``tlx serve`` and ``tlx export --format triton`` then take
its ``plan`` as their defaults (``core/tuneplan.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.bench.tune_load import measure_in_process
from exporter.bench.tune_search import Measure, Measurement, SearchResult, Trial, search
from exporter.core.config import TuneConfig, to_dict
from exporter.core.machine import machine_facts, usable_cpus
from exporter.core.report import Progress
from exporter.core.runlock import locks_run
from exporter.core.tuneplan import TUNE_JSON

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

TUNE_SCHEMA_VERSION = 1
MEASUREMENT = (
    "in-process: Triton's dynamic-batcher rule and closed-loop single-image clients around "
    "one predictor per instance, without the server's HTTP and IPC (the same for every trial)"
)


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
    from exporter.core.report import write_report_json
    from exporter.core.runfolder import open_run
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

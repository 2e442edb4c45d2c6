"""How ``--engine ray`` cuts the work: actors x threads per actor, images per Ray task,
blocks. Measured on 2 cores (benchmarks/ray_bar.py): each Ray task costs a round trip
through the actor, the object store and the driver, so a task carries several runtime
batches; each actor's start (a Ray worker importing Ray Data, then the model load) is paid
once per actor, so no more actors than the CPUs hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.config import PredictConfig
from exporter.core.errors import EnvironmentUnavailable

MAX_BLOCKS = 4096
TASK_IMAGES = 256


def task_images(images: int, batch_size: int, actors: int) -> int:
    """Images per Ray task: whole ``--batch-size`` batches (the actor runs them as
    in-process does, so the runtime sees the same batches), about :data:`TASK_IMAGES` of them
    (each task costs Ray a round trip through the actor, the object store and the driver:
    with one batch of 32 per task the images after the first took 2-2.5x as long as
    in-process on a busy 2-core machine, about 50 ms per task; with 7 batches per task they
    no longer lagged), but at least 4 tasks per actor so that the last ones leave no actor
    idle for long."""
    by_size = -(-TASK_IMAGES // batch_size)
    by_balance = images // (batch_size * actors * 4)
    return batch_size * max(1, min(by_size, by_balance))


def block_count(images: int, task: int) -> int:
    """One block per task (Ray's default, ~200 blocks, cut 2,000 paths into blocks of 10 to
    bundle back), at most :data:`MAX_BLOCKS` (each block is an object the driver tracks)."""
    per_block = task * -(-images // (task * MAX_BLOCKS))
    return max(1, -(-images // per_block))


def actor_plan(run: str | Path, cfg: PredictConfig, choice: Any, cpus: int) -> tuple[int, int]:
    """Actors and threads per actor, actors x threads <= ``cpus``: ``--threads`` if given,
    else ``RUN/tune.json``'s instances x threads when it was measured on this artifact and
    runtime (capped by the CPUs), else one thread per actor.

    Raises:
        EnvironmentUnavailable: fewer CPUs than one actor's threads.
    """
    from exporter.core.runreports import serve_settings

    threads, actors = cfg.threads or 1, cpus // max(1, cfg.threads or 1)
    if cfg.threads is None:
        plan, _ = serve_settings(
            run,
            {"instances": None, "threads": None},
            device=cfg.device,
            variant=choice.artifact.name,
            runtime=choice.runtime,
        )
        if plan["threads"]:
            threads = min(plan["threads"], max(1, cpus))
            actors = min(max(1, plan["instances"] or 1), cpus // threads)
    if cpus < threads:
        raise EnvironmentUnavailable(
            f"the Ray cluster has {cpus} CPU(s); --threads {threads} per actor needs at least that"
        )
    return max(1, actors), threads

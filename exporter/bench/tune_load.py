"""The timer of ``tlx tune``: an in-process closed-loop load test with a dynamic batcher.

Starting a Triton server per trial costs seconds of start-up and warm-up each, more than a
60 s budget can hold, so each trial runs what ``tlx serve`` runs inside Triton, in this
process: ``instances`` predictors (one session each, ``threads_per_instance`` threads), a
dynamic batcher in front of them (a request waits up to ``queue_delay_us`` for others, up to
``max_batch`` images: Triton's rule), and ``concurrency`` client threads that each keep one
single-image request in flight (closed loop, as ``tlx loadtest`` does against a server).
ONNX Runtime and OpenVINO release the GIL while they compute, so the instances run in
parallel. What this leaves out is Triton's own cost (HTTP, the IPC to its Python backend),
the same for every trial: the ranking holds, the absolute numbers are higher than a server's.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exporter.bench.measure import Completions
from exporter.bench.tune_search import Measurement, Trial

WARMUP_SHARE = 0.2  # of each window: requests completed then are not counted
# A window is stretched (up to MAX_STRETCH times) until this many requests were counted: a
# slow setting on a busy machine would otherwise report nothing, or a p99 of a few samples.
MIN_COUNTED = 20
MAX_STRETCH = 4


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

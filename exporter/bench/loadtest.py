"""``tlx loadtest`` / ``tlx bench --server``: a closed-loop concurrency sweep against a server.

At each level ``c``, ``c`` client threads keep one request each in flight (closed loop: a
thread sends its next request when the previous answer arrives), as perf_analyzer's
``--concurrency-range`` does. The level is measured in windows; it counts once
``stable_windows`` consecutive windows agree within ``stability_pct`` in throughput and mean
latency (perf_analyzer's stability rule), and its figures are those windows' requests. The
server's statistics endpoint, read at the windows' edges, splits the time into queue and
compute and gives the average batch the dynamic batcher formed.

Bounded: per level by ``max_windows`` and ``max_requests``, for the sweep by ``max_time_s``;
and loopback only unless ``allow_remote`` says otherwise (a load test is not for other
people's servers).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from exporter.bench.loadtest_report import (
    FAILED,
    STABILITY_RULE,
    THROUGHPUT_BASIS,
    UNSTABLE,
    LevelResult,
    LoadtestReport,
    server_split,
    write_loadtest_reports,
)
from exporter.bench.measure import Completions, rotated
from exporter.bench.result import latency_stats
from exporter.core.config import LoadtestConfig
from exporter.core.envinfo import environment
from exporter.core.errors import UsageError
from exporter.core.report import Progress
from exporter.core.runfolder import Run, open_run
from exporter.serve.client import (
    ServedModel,
    ServerError,
    TritonHttpClient,
    check_served_model,
    is_loopback,
    parse_url,
)


def run_loadtest(
    run_dir: Run | str | Path, cfg: LoadtestConfig, *, progress: Progress | None = None
) -> LoadtestReport:
    """Sweep ``cfg.concurrency`` against ``cfg.server`` and write the loadtest reports.

    Raises:
        UsageError: a remote server without ``allow_remote``, a model that is not this run's
            (other input size or another file), or a bad run folder.
        EnvironmentUnavailable: nothing answers at the URL (exit 3).
    """
    info = open_run(run_dir)
    host, _ = parse_url(cfg.server)
    if not cfg.allow_remote and not is_loopback(host):
        raise UsageError(
            f"--server {cfg.server}: {host} is not this machine's loopback; a load test sends "
            "thousands of requests, so pass --allow-remote to aim it at another host"
        )
    with TritonHttpClient(cfg.server) as client:
        served = client.model(cfg.model_name)
    notes = check_served_model(info, served)
    if cfg.request_batch > served.max_batch_size > 0:
        raise UsageError(
            f"--request-batch {cfg.request_batch}: the server takes at most "
            f"{served.max_batch_size} images per request"
        )
    rng = np.random.default_rng(cfg.seed)
    inputs = [
        rng.standard_normal((cfg.request_batch, *served.input_dims), dtype=np.float32)
        for _ in range(8)
    ]
    levels: list[LevelResult] = []
    report_progress = progress or (lambda *_: None)
    deadline = time.monotonic() + cfg.max_time_s
    for i, c in enumerate(cfg.concurrency):
        need = cfg.warmup_s + cfg.window_s * cfg.stable_windows
        if time.monotonic() + need > deadline:
            notes.append(f"concurrency {c} and above not run: --max-time {cfg.max_time_s:g} s")
            break
        report_progress(f"concurrency {c}", i, len(cfg.concurrency))
        levels.append(measure_level(cfg, served, inputs, c, deadline=deadline))
    report_progress("done", len(cfg.concurrency), len(cfg.concurrency))
    report = LoadtestReport(
        run_dir=info.run_dir,
        config=cfg,
        environment=environment("cpu"),
        setup={
            "server": cfg.server,
            "served": served.to_dict(),
            "image_size": served.input_dims[-1] if served.input_dims else None,
            "request_batch": cfg.request_batch,
            "input_seed": cfg.seed,
            "timer": "time.perf_counter per request, send to full answer",
            "stability_rule": STABILITY_RULE.format(k=cfg.stable_windows, pct=cfg.stability_pct),
            "throughput_basis": THROUGHPUT_BASIS,
            "client": "tlx KServe v2 HTTP client, binary tensors, one keep-alive connection "
            "per thread",
        },
        levels=levels,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
    )
    out = Path(cfg.out_dir) if cfg.out_dir else info.run_dir
    write_loadtest_reports(report, out)
    return report


def measure_level(
    cfg: LoadtestConfig,
    served: ServedModel,
    inputs: list[np.ndarray],
    concurrency: int,
    *,
    deadline: float,
) -> LevelResult:
    """One closed-loop level: warm up, then windows until stable or a bound is reached."""
    record = Completions()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(cfg, served, rotated(inputs, i), record, stop),
            name=f"tlx-load-{i}",
            daemon=True,
        )
        for i in range(concurrency)
    ]
    result = LevelResult(concurrency=concurrency)
    stats_client = TritonHttpClient(cfg.server)
    try:
        for t in threads:
            t.start()
        time.sleep(cfg.warmup_s)
        edges = [time.perf_counter()]
        snapshots = [_stats(stats_client, served.name)]
        while True:
            time.sleep(cfg.window_s)
            edges.append(time.perf_counter())
            snapshots.append(_stats(stats_client, served.name))
            lat, ok = record.between(edges[-2], edges[-1])
            result.windows.append(_window(lat, ok, edges[-1] - edges[-2], cfg.request_batch))
            if _stable(result.windows[-cfg.stable_windows :], cfg):
                result.stable = True
                break
            if (
                len(result.windows) >= cfg.max_windows
                or record.count() >= cfg.max_requests
                or time.monotonic() >= deadline
            ):
                result.status = UNSTABLE
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=cfg.window_s + 60)
        stats_client.close()
    k = min(cfg.stable_windows, len(result.windows))
    result.counted_windows = k
    lat, ok = record.between(edges[-k - 1], edges[-1])
    result.requests = int(ok.sum())
    result.errors = int((~ok).sum())
    result.error_samples = list(record.error_samples)
    if result.errors:
        result.status = FAILED
    result.stats = latency_stats([1000.0 * v for v in lat[ok]], batch_size=cfg.request_batch)
    span = edges[-1] - edges[-k - 1]
    result.stats["throughput_img_s"] = result.requests * cfg.request_batch / span if span else None
    result.stats.pop("throughput_img_s_mean", None)
    result.server = server_split(snapshots[-k - 1], snapshots[-1])
    mean = result.stats.get("latency_ms_mean")
    if mean is not None and result.server.get("request_ms") is not None:
        result.server["client_overhead_ms"] = mean - result.server["request_ms"]
    return result


def _client_loop(
    cfg: LoadtestConfig,
    served: ServedModel,
    inputs: list[np.ndarray],
    record: Completions,
    stop: threading.Event,
) -> None:
    with TritonHttpClient(cfg.server, timeout_s=60.0) as client:
        i = 0
        while not stop.is_set() and record.count() < cfg.max_requests:
            x = inputs[i % len(inputs)]
            i += 1
            t0 = time.perf_counter()
            error = None
            try:
                out = client.infer(
                    served.name, x, input_name=served.input_name, output_name=served.output_name
                )
                if out.shape[0] != x.shape[0]:
                    error = f"answer has {out.shape[0]} rows for {x.shape[0]} images"
            except ServerError as exc:
                error = str(exc)[:300]
            except (OSError, ValueError) as exc:
                error = f"{exc.__class__.__name__}: {exc}"[:300]
                client.close()
            t1 = time.perf_counter()
            record.add(t1, t1 - t0, error)


def _stats(client: TritonHttpClient, model: str) -> dict[str, Any] | None:
    try:
        return client.stats(model)
    except Exception:  # a server without the statistics extension still gets a load test
        client.close()
        return None


def _window(lat: np.ndarray, ok: np.ndarray, span_s: float, batch: int) -> dict[str, Any]:
    good = lat[ok]
    return {
        "duration_s": span_s,
        "requests": int(ok.sum()),
        "errors": int((~ok).sum()),
        "throughput_img_s": float(good.size * batch / span_s) if span_s > 0 else 0.0,
        "latency_ms_mean": float(1000.0 * good.mean()) if good.size else None,
    }


def _stable(windows: list[dict[str, Any]], cfg: LoadtestConfig) -> bool:
    """perf_analyzer's rule: the last windows' throughput and latency within the band."""
    if len(windows) < cfg.stable_windows:
        return False
    limit = 1.0 + cfg.stability_pct / 100.0
    for key in ("throughput_img_s", "latency_ms_mean"):
        values = [w[key] for w in windows]
        if any(v is None or v <= 0 for v in values) or max(values) / min(values) > limit:
            return False
    return True

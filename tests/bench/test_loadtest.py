"""The load test's rules and reports without a server: stability, the server split, options."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter.bench.loadtest import _stable, _window
from exporter.bench.loadtest_report import (
    LevelResult,
    LoadtestReport,
    server_split,
    write_loadtest_reports,
)
from exporter.cli import app
from exporter.core.config import LoadtestConfig
from exporter.core.errors import UsageError

CFG = LoadtestConfig()


def _w(thr: float, lat: float | None) -> dict:
    return {"throughput_img_s": thr, "latency_ms_mean": lat}


@pytest.mark.parametrize(
    ("windows", "stable"),
    [
        ([_w(100, 10), _w(105, 10.5), _w(109, 10.9)], True),
        ([_w(100, 10), _w(105, 10.5), _w(111, 10.9)], False),  # throughput 11% apart
        ([_w(100, 10), _w(100, 11.2), _w(100, 10)], False),  # latency 12% apart
        ([_w(100, 10), _w(100, 10)], False),  # too few windows
        ([_w(100, 10), _w(0, None), _w(100, 10)], False),  # a window without answers
    ],
)
def test_stability_is_perf_analyzers_rule(windows: list[dict], stable: bool) -> None:
    assert _stable(windows, CFG) is stable


def test_window_counts_only_answered_requests() -> None:
    lat = np.array([0.010, 0.020, 0.030])
    ok = np.array([True, True, False])
    w = _window(lat, ok, 2.0, batch=4)
    assert (w["requests"], w["errors"]) == (2, 1)
    assert w["throughput_img_s"] == pytest.approx(4.0)  # 2 requests x 4 images / 2 s
    assert w["latency_ms_mean"] == pytest.approx(15.0)
    assert _window(lat, np.zeros(3, bool), 2.0, batch=1)["latency_ms_mean"] is None


def _stats(images: int, executions: int, requests: int, queue_ns: int, infer_ns: int, hist: dict):
    def sec(count: int, ns: int) -> dict:
        return {"count": count, "ns": ns}

    return {
        "inference_count": images,
        "execution_count": executions,
        "inference_stats": {
            "success": sec(requests, queue_ns + infer_ns + 2 * requests * 1000),
            "fail": sec(0, 0),
            "queue": sec(requests, queue_ns),
            "compute_input": sec(requests, requests * 1000),
            "compute_infer": sec(requests, infer_ns),
            "compute_output": sec(requests, requests * 1000),
        },
        "batch_stats": [
            {"batch_size": b, "compute_infer": sec(n, 0)} for b, n in sorted(hist.items())
        ],
    }


def test_server_split_gives_queue_compute_and_average_batch() -> None:
    before = _stats(10, 10, 10, 1_000_000, 5_000_000, {1: 10})
    after = _stats(110, 35, 110, 51_000_000, 205_000_000, {1: 15, 4: 20})
    s = server_split(before, after)
    assert s["images"] == 100 and s["executions"] == 25
    assert s["batch_avg"] == pytest.approx(4.0)
    assert s["queue_ms"] == pytest.approx(0.5)  # 50 ms over 100 requests
    assert s["compute_infer_ms"] == pytest.approx(2.0)
    assert s["compute_ms"] == pytest.approx(2.002)
    assert s["batch_histogram"] == {"1": 5, "4": 20}
    assert server_split(None, after) == {"available": False}


def _report(tmp_path: Path, errors: int = 0) -> LoadtestReport:
    levels = []
    for c, batch in ((1, 1.0), (8, 3.5)):
        lv = LevelResult(concurrency=c, stable=True, requests=100, errors=errors)
        lv.windows = [_w(50.0 * c, 20.0)] * 3
        lv.stats = {
            "latency_ms_p50": 20.0,
            "latency_ms_p90": 25.0,
            "latency_ms_p95": 27.0,
            "latency_ms_p99": 30.0,
            "latency_ms_mean": 21.0,
            "throughput_img_s": 50.0 * c,
        }
        lv.server = {"available": True, "batch_avg": batch, "queue_ms": 1.0, "compute_ms": 15.0}
        if errors:
            lv.status, lv.error_samples = "errors", ["HTTP 400: bad"]
        levels.append(lv)
    served = {
        "name": "vgg16",
        "artifact": "model.onnx",
        "instances": 1,
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_microseconds": 100},
        "parameters": {"tlx_artifact": "model.onnx", "tlx_runtime": "ort-cpu"},
    }
    return LoadtestReport(
        run_dir=tmp_path,
        config=CFG,
        environment={"cpu_model": "test", "cpu_count": 2},
        setup={
            "server": CFG.server,
            "served": served,
            "image_size": 32,
            "request_batch": 1,
            "input_seed": 0,
            "client": "test",
            "stability_rule": "rule",
            "throughput_basis": "basis",
        },
        levels=levels,
        created_at="2026-01-01T00:00:00+00:00",
    )


def test_reports_have_benchs_shapes(tmp_path: Path) -> None:
    report = _report(tmp_path)
    files = write_loadtest_reports(report, tmp_path / "out")
    assert set(files) == {"loadtest.json", "loadtest.md", "loadtest.csv", "loadtest.png"}
    data = json.loads(Path(files["loadtest.json"]).read_text())
    assert data["schema_version"] == 1 and data["command"] == "loadtest"
    assert [r["concurrency"] for r in data["rows"]] == [1, 8]
    assert data["best"]["concurrency"] == 8 and data["errors_total"] == 0
    md = Path(files["loadtest.md"]).read_text()
    assert "| concurrency |" in md and "Best: concurrency 8" in md
    csv_head = Path(files["loadtest.csv"]).read_text().splitlines()[0]
    assert "latency_ms_p99" in csv_head and "server_batch_avg" in csv_head
    assert report.gate_failures == []


def test_failed_requests_fail_the_gate(tmp_path: Path) -> None:
    report = _report(tmp_path, errors=3)
    assert len(report.gate_failures) == 2
    assert "3 of 103 requests failed (HTTP 400: bad)" in report.gate_failures[0]


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"concurrency": ()}, "--concurrency"),
        ({"concurrency": (1, 1)}, "--concurrency"),
        ({"request_batch": 0}, "--request-batch"),
        ({"window_s": 0}, "--window"),
        ({"max_windows": 2}, "--max-windows"),
        ({"max_time_s": -1}, "--max-time"),
    ],
)
def test_bad_config_names_the_option(changes: dict, option: str) -> None:
    with pytest.raises(UsageError, match=option):
        LoadtestConfig(**changes)


def test_a_remote_server_needs_allow_remote(shared_run_folder: Path) -> None:
    # The session's run (no 537 MB copy): refused before anything is written to it.
    before = sorted(p.name for p in shared_run_folder.iterdir())
    result = CliRunner().invoke(
        app, ["loadtest", str(shared_run_folder), "--server", "http://192.0.2.1:8000"]
    )
    assert result.exit_code == 2, result.output
    assert "--allow-remote" in result.output
    assert sorted(p.name for p in shared_run_folder.iterdir()) == before


@pytest.mark.parametrize("command", [["loadtest"], ["bench"], ["verify"]])
def test_no_server_at_the_url_is_exit_3(onnx_run: Path, command: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(
        app, [*command, str(onnx_run), "--server", f"http://127.0.0.1:{port}"]
    )
    assert result.exit_code == 3, result.output
    assert "no server answers" in result.output and "Traceback" not in result.output

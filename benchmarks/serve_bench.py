"""Served vs in-process: the 32 px fold-int8 artifact behind `tlx serve` against ORT in-process.

Usage (on a quiet machine; the numbers mean nothing while other jobs run)::

    .venv/bin/python benchmarks/serve_bench.py          # into artifacts/serve-bench/ (ignored)
    .venv/bin/python benchmarks/serve_bench.py --out /tmp/serve_tiny --tiny   # a smoke run

1. A 32 px run trained the demo's way (synthetic shapes, `tlx train`'s defaults, random-init
   trunk, no download), exported to ONNX and optimized to ``fold-int8`` (gated by
   ``tlx optimize``); a copy of the run folder that lists only that artifact.
2. In-process: ``tlx bench`` (ORT CPU) at batch 1..64 on that copy; its best throughput.
3. Served: ``tlx serve --variant fold-int8`` on loopback (dynamic batching up to 64); parity
   of the served logits with in-process ORT on the held-out images (max abs, must be 0),
   ``tlx verify --server`` (top-1 against the eager reference), then ``tlx loadtest``
   (closed loop, concurrency 1..32, single-image requests, perf_analyzer's stability rule).
4. SIGTERM, then ``<out>/serve_bench.json`` and ``serve_bench.md``: the ratio of the best
   served throughput to the best in-process throughput (the bar: >= 0.8), p99 per level,
   errors, parity.

The load generator runs on the same machine as the server (as perf_analyzer on a one-box
setup does), so on 2 cores the client's own CPU use is inside the served figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANT = "fold-int8"
MODEL = "vgg16"


def make_run(out: Path, *, tiny: bool) -> Path:
    """Train (demo recipe), export ONNX, optimize fold-int8; reuse a finished run."""
    from exporter.core.config import DataConfig, ExportConfig, OptimizeConfig, TrainConfig
    from exporter.export.export import export_run
    from exporter.optimize.optimize import optimize_run
    from exporter.train import fit

    run = out / "run32"
    if not (run / "model.safetensors").exists():
        epochs = 4 if tiny else 12
        fit(
            TrainConfig(
                data=DataConfig(
                    source="synthetic",
                    train_size=200 if tiny else 400,
                    val_size=100 if tiny else 256,
                    image_size=32,
                ),
                weights="none",
                epochs=epochs,
                save_every=epochs,
                device="cpu",
                out=str(run),
            )
        )
    if not (run / "model.onnx").exists():
        export_run(run, ExportConfig(formats=("onnx",)))
    if not (run / "model.fold.int8.onnx").exists():
        result = optimize_run(run, OptimizeConfig(variants=(VARIANT,), eval_samples=100))
        if result.gate_failures:
            raise SystemExit(f"fold-int8 was rejected by its gate: {result.gate_failures}")
    return run


def only_artifact(run: Path, dest: Path, name: str) -> Path:
    """A copy of ``run`` whose manifest lists only ``name`` (bench times just that file)."""
    from exporter.core.manifest import load_manifest, save_manifest

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("train.json", "model.safetensors", name):
        shutil.copyfile(run / f, dest / f)
    manifest = load_manifest(run)
    manifest.artifacts = {k: v for k, v in manifest.artifacts.items() if k == name}
    save_manifest(dest, manifest)
    return dest


def in_process(run: Path, out: Path, *, threads: int, tiny: bool) -> dict[str, Any]:
    from exporter.bench.bench import bench_run
    from exporter.core.config import BenchConfig

    cfg = BenchConfig(
        runtimes=("ort-cpu",),
        batch_sizes=(1, 8, 64) if tiny else (1, 2, 4, 8, 16, 32, 64),
        warmup=2 if tiny else 10,
        iters=5 if tiny else 200,
        threads=threads,
        reference_runtime="ort-cpu",
        out_dir=str(out),
    )
    report = bench_run(run, cfg)
    rows = [r for r in report.rows() if r.get("throughput_img_s")]
    best = max(rows, key=lambda r: r["throughput_img_s"])
    return {
        "rows": [
            {k: r.get(k) for k in ("batch_size", "latency_ms_p50", "latency_ms_p99")}
            | {"throughput_img_s": r["throughput_img_s"]}
            for r in rows
        ],
        "best_batch": best["batch_size"],
        "best_throughput_img_s": best["throughput_img_s"],
        "bench_json": str(out / "bench.json"),
    }


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(run: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str, list[str]]:
    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "exporter", "serve", str(run), "--variant", VARIANT]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    cmd += ["--max-batch", "64", "--max-queue-delay-us", str(args.queue_delay_us)]
    # Unset: tlx serve's own plan (on the CPU, 2 instances splitting the cores).
    if args.server_threads:
        cmd += ["--threads", str(args.server_threads)]
    if args.instances:
        cmd += ["--instances", str(args.instances)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []

    def pump(stream) -> None:
        for line in stream:
            lines.append(line)
            print("  serve: " + line.rstrip(), file=sys.stderr)

    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=pump, args=(stream,), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any(x.startswith("ready:") for x in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"tlx serve did not start:\n{''.join(lines)}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{http}", lines


def parity(run: Path, url: str, *, samples: int) -> dict[str, Any]:
    """Served vs in-process ORT on the same file and the same held-out images."""
    from exporter.core.runfolder import open_run
    from exporter.data.datasets import load_eval_images
    from exporter.serve.client import TritonHttpClient
    from exporter.serve.predictor import load

    images, _ = load_eval_images(open_run(run), samples, split="val")
    images = np.ascontiguousarray(images, dtype=np.float32)
    with load(run, variant=VARIANT, runtime="ort-cpu") as p, TritonHttpClient(url) as c:
        diffs = []
        for i in range(0, len(images), 64):
            x = images[i : i + 64]
            diffs.append(float(np.max(np.abs(c.infer(MODEL, x) - p.logits(x)))))
    return {"images": len(images), "served_vs_inprocess_max_abs": max(diffs)}


def verify_served(run: Path, url: str, *, samples: int) -> dict[str, Any]:
    from exporter.core.config import VerifyConfig
    from exporter.verify.served import verify_server

    report = verify_server(run, VerifyConfig(samples=samples), server=url, model_name=MODEL)
    (c,) = report.candidates
    return {
        "verdict": report.verdict,
        "top1_agreement_vs_eager_pct": (c.overall or {}).get("top1_agreement_pct"),
        "heldout_accuracy_served_pct": c.accuracy_candidate_pct,
        "heldout_accuracy_eager_pct": c.accuracy_reference_pct,
        "failures": c.failures,
    }


def loadtest(run: Path, url: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from exporter.bench.loadtest import run_loadtest
    from exporter.core.config import LoadtestConfig

    cfg = LoadtestConfig(
        server=url,
        concurrency=(1, 4, 16) if args.tiny else args.concurrency,
        request_batch=args.request_batch,
        window_s=0.5 if args.tiny else 5.0,
        warmup_s=0.3 if args.tiny else 2.0,
        max_windows=4 if args.tiny else 10,
        out_dir=str(out),
    )
    report = run_loadtest(
        run, cfg, progress=lambda m, *_: print(f"  loadtest: {m}", file=sys.stderr)
    )
    keys = ("concurrency", "status", "requests", "errors", "throughput_img_s", "latency_ms_p50")
    keys += ("latency_ms_p99", "server_batch_avg", "server_queue_ms", "server_compute_ms")
    return {
        "levels": [{k: r.get(k) for k in keys} for r in report.rows()],
        "best": report.best(),
        "errors_total": report.errors_total,
        "loadtest_json": report.files.get("loadtest.json"),
    }


def markdown(res: dict[str, Any]) -> str:
    from exporter.core.report import markdown_table

    bar = res["bar"]
    lines = [
        f"### Served vs in-process ({res['created_at']})",
        "",
        f"- machine: {res['environment'].get('cpu_model')} "
        f"({res['environment'].get('cpu_count')} CPUs); command: `{res['command']}`",
        f"- artifact: {res['artifact']} (32 px), ORT CPU, {res['threads']} threads in-process; "
        f"server: {res['instances']} instance(s) x {res['server_threads']} threads, max batch 64, "
        f"queue delay {res['queue_delay_us']} us; "
        f"{res['request_batch']} image(s) per request",
        f"- in-process best: batch {res['in_process']['best_batch']}, "
        f"{res['in_process']['best_throughput_img_s']:.1f} img/s",
        f"- served best: concurrency {bar['served_best_concurrency']}, "
        f"{bar['served_best_throughput_img_s']:.1f} img/s -> ratio {bar['ratio']:.2f} "
        f"(bar >= 0.8: {'PASS' if bar['ratio_ok'] else 'FAIL'})",
        f"- errors over the sweep: {bar['errors_total']}; served vs in-process max abs: "
        f"{res['parity']['served_vs_inprocess_max_abs']:g} on {res['parity']['images']} images; "
        f"top-1 vs eager: {res['verify']['top1_agreement_vs_eager_pct']}% "
        f"({res['verify']['verdict']}); SIGTERM exit code {res['sigterm_exit_code']}",
        "",
        markdown_table(
            res["loadtest"]["levels"],
            [
                ("concurrency", "concurrency"),
                ("status", "status"),
                ("errors", "errors"),
                ("throughput_img_s", "img/s"),
                ("latency_ms_p50", "p50 ms"),
                ("latency_ms_p99", "p99 ms"),
                ("server_batch_avg", "avg batch"),
                ("server_queue_ms", "queue ms"),
                ("server_compute_ms", "compute ms"),
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "serve-bench")
    ap.add_argument("--tiny", action="store_true", help="a smoke run: small data, short windows")
    ap.add_argument("--threads", type=int, default=2, help="in-process ORT threads")
    ap.add_argument(
        "--server-threads",
        type=int,
        default=None,
        help="ORT threads per server instance (default: tlx serve's plan); in-process: --threads",
    )
    ap.add_argument("--instances", type=int, default=None, help="default: tlx serve's plan")
    ap.add_argument("--queue-delay-us", type=int, default=1000)
    ap.add_argument("--request-batch", type=int, default=1)
    ap.add_argument(
        "--concurrency",
        type=lambda s: tuple(int(c) for c in s.split(",")),
        default=(1, 2, 4, 8, 16, 32),
        help="closed-loop levels, comma-separated (default 1,2,4,8,16,32)",
    )
    args = ap.parse_args()
    from datetime import datetime, timezone

    from exporter.core.envinfo import environment

    args.out.mkdir(parents=True, exist_ok=True)
    run = make_run(args.out, tiny=args.tiny)
    served_run = only_artifact(run, args.out / "run32-fold-int8", "model.fold.int8.onnx")
    print("in-process ORT ...", file=sys.stderr)
    inproc = in_process(served_run, args.out / "inprocess", threads=args.threads, tiny=args.tiny)
    proc, url, lines = start_server(served_run, args)
    # What the server chose (its own plan unless given): "(x2, 1 thread(s) each, ...".
    plan = re.search(r"\(x(\d+), (\w+) thread", next(x for x in lines if x.startswith("ready:")))
    try:
        print("parity and verify through the server ...", file=sys.stderr)
        par = parity(served_run, url, samples=64 if args.tiny else 256)
        ver = verify_served(served_run, url, samples=64 if args.tiny else 256)
        print("load test ...", file=sys.stderr)
        lt = loadtest(served_run, url, args.out / "loadtest", args)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    best = lt["best"] or {}
    ratio = (best.get("throughput_img_s") or 0.0) / inproc["best_throughput_img_s"]
    res = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": environment("cpu"),
        "artifact": "model.fold.int8.onnx",
        "threads": args.threads,
        "server_threads": plan.group(2) if plan else args.server_threads,
        "instances": int(plan.group(1)) if plan else args.instances,
        "queue_delay_us": args.queue_delay_us,
        "request_batch": args.request_batch,
        "tiny": args.tiny,
        "in_process": inproc,
        "parity": par,
        "verify": ver,
        "loadtest": lt,
        "sigterm_exit_code": rc,
        "bar": {
            "served_best_concurrency": best.get("concurrency"),
            "served_best_throughput_img_s": best.get("throughput_img_s") or 0.0,
            "in_process_best_throughput_img_s": inproc["best_throughput_img_s"],
            "ratio": ratio,
            "ratio_ok": ratio >= 0.8,
            "errors_total": lt["errors_total"],
            "parity_exact": par["served_vs_inprocess_max_abs"] == 0.0,
            "top1_vs_eager_100": ver["top1_agreement_vs_eager_pct"] == 100.0,
        },
    }
    (args.out / "serve_bench.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    text = markdown(res)
    (args.out / "serve_bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""``tlx demo``: the whole product in one offline command, in minutes on a laptop CPU.

train (built-in synthetic dataset, 32 px) → export every format → verify parity of every
artifact on every runtime that runs here → bench them, then one summary: accuracy, parity
verdicts, the fastest runtime, and where every file is (``demo.json`` lists them too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.config import DEFAULT_ARTIFACTS_DIR, DemoConfig, to_dict

if TYPE_CHECKING:
    from exporter.bench.result import BenchReport
    from exporter.verify.verify import ParityReport

DEMO_JSON = "demo.json"
DEMO_SCHEMA_VERSION = 1
STEPS = ("train", "export", "verify", "bench")

DemoProgress = Callable[[str, float, float], None]
"""``progress(description, done, total)`` for the step in progress."""


@dataclass
class DemoResult:
    """What the demo did, how long each step took and where its files are."""

    run_dir: Path
    config: DemoConfig
    val_accuracy: float | None
    verify: ParityReport
    bench: BenchReport
    step_seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every artifact passed its parity gate."""
        return self.verify.passed

    @property
    def gate_failures(self) -> list[str]:
        """Verify's failures (the demo's only gate)."""
        return self.verify.gate_failures

    def verdicts(self) -> list[dict[str, Any]]:
        """One ``{runtime, artifact, verdict, why}`` per verified candidate."""
        return [
            {
                "runtime": c.runtime,
                "artifact": c.artifact,
                "verdict": "pass" if c.passed else ("error" if c.error else "fail"),
                "why": c.error or "; ".join(c.failures),
            }
            for c in self.verify.candidates
        ]

    def fastest(self) -> dict[int, dict[str, Any]]:
        """Per bench batch size: the runtime with the lowest p50 latency."""
        return {
            b: {k: row[k] for k in ("runtime", "artifact", "latency_ms_p50", "throughput_img_s")}
            for b, row in self.bench.fastest().items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": DEMO_SCHEMA_VERSION,
            "command": "demo",
            "run_dir": str(self.run_dir),
            "config": to_dict(self.config),
            "environment": self.bench.environment,
            "val_accuracy": self.val_accuracy,
            "verify_verdict": self.verify.verdict,
            "verdicts": self.verdicts(),
            "verify_skipped": self.verify.skipped,
            "fastest": {str(b): v for b, v in self.fastest().items()},
            "bench_skipped": self.bench.skipped,
            "step_seconds": self.step_seconds,
            "total_seconds": sum(self.step_seconds.values()),
            "files": self.files,
        }


def default_demo_dir() -> Path:
    """``artifacts/demo-<UTC time>``: a fresh folder per demo."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(DEFAULT_ARTIFACTS_DIR) / f"demo-{stamp}"


def run_demo(cfg: DemoConfig, *, progress: DemoProgress | None = None) -> DemoResult:
    """Train → export → verify → bench into one new run folder; write ``demo.json``.

    Args:
        cfg: demo sizes; the defaults finish in under three minutes on 2 CPU cores.
        progress: called as each step advances.

    Returns:
        The result; ``passed`` is False when a parity gate failed (the CLI exits 1).

    Raises:
        UsageError / InputFileError: bad settings or a bad ``--weights`` file (exit 2), or
            ``out_dir`` already holds a run.
        EnvironmentUnavailable: a runtime named in ``cfg.runtimes`` cannot run here (exit 3).
    """
    from exporter.bench.bench import bench_run
    from exporter.core.config import (
        BenchConfig,
        DataConfig,
        ExportConfig,
        TrainConfig,
        VerifyConfig,
    )
    from exporter.core.fsio import write_json
    from exporter.export.export import export_run
    from exporter.train import fit
    from exporter.verify.report import write_reports
    from exporter.verify.verify import verify_run

    say = progress or (lambda *_: None)
    run_dir = Path(cfg.out_dir) if cfg.out_dir else default_demo_dir()
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    train_cfg = TrainConfig(
        data=DataConfig(
            source="synthetic",
            seed=cfg.seed,
            train_size=cfg.train_size,
            val_size=cfg.val_size,
            image_size=cfg.image_size,
        ),
        # Everything else is `tlx train`'s defaults: one recipe everywhere. At 32 px they train
        # on un-augmented images, so the trunk runs once and each epoch is the head alone.
        weights=cfg.weights,
        epochs=cfg.epochs,
        device="cpu",
        save_every=cfg.epochs,  # one resumable checkpoint at the end, not ~1.5 GB per epoch
        seed=cfg.seed,
        out=str(run_dir),
        quiet=True,
    )
    trained = fit(train_cfg, progress=lambda ev: _train_progress(say, ev))
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    export_run(
        run_dir,
        ExportConfig(formats=cfg.formats, seed=cfg.seed),
        progress=lambda d, done, total: say(f"export: {d}", done, total),
    )
    seconds["export"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    parity = verify_run(
        run_dir,
        VerifyConfig(runtimes=cfg.runtimes, samples=min(16, cfg.val_size), seed=cfg.seed),
        progress=lambda d, done, total: say(f"verify: {d}", done, total),
    )
    verify_json, verify_md = write_reports(parity)
    seconds["verify"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bench = bench_run(
        run_dir,
        BenchConfig(
            runtimes=cfg.runtimes,
            batch_sizes=cfg.batch_sizes,
            warmup=cfg.warmup,
            iters=cfg.iters,
            iters_per_round=min(5, cfg.iters),
            seed=cfg.seed,
        ),
        progress=lambda d, done, total: say(f"bench: {d}", done, total),
    )
    seconds["bench"] = time.perf_counter() - t0

    files = {
        "run folder": str(run_dir),
        "weights": str(run_dir / "model.safetensors"),
        "train report": str(run_dir / "train.json"),
        "manifest": str(run_dir / "manifest.json"),
        **{f"artifact {name}": str(run_dir / name) for name in _artifact_names(run_dir)},
        "verify report": str(verify_json),
        "verify summary": str(verify_md),
        **{f"bench {Path(p).suffix[1:]}": p for p in bench.files.values()},
        "demo report": str(run_dir / DEMO_JSON),
    }
    result = DemoResult(
        run_dir=run_dir,
        config=cfg,
        val_accuracy=trained.best_val_accuracy,
        verify=parity,
        bench=bench,
        step_seconds=seconds,
        files=files,
    )
    write_json(run_dir / DEMO_JSON, result.to_dict())
    return result


def _train_progress(say: DemoProgress, event: Any) -> None:
    if event.kind == "step" and event.steps:
        say(f"train: epoch {event.epoch}/{event.epochs}", event.step, event.steps)
    elif event.kind == "cache":
        say("train: caching frozen features", event.step, max(event.steps, 1))


def _artifact_names(run_dir: Path) -> list[str]:
    from exporter.core.manifest import load_manifest

    return sorted(load_manifest(run_dir).artifacts)

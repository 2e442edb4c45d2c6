"""``tlx demo``: the whole product in one offline command, in minutes on a laptop CPU.

train (built-in synthetic dataset, 32 px) → export every format → optimize (fold, int8,
fold-int8, each gated) → verify parity of every artifact on every runtime that runs here →
bench them, then one summary: accuracy, parity verdicts, the recommended deployment (the
fastest verified artifact × runtime, its speed-up over eager, agreement and size), and where
every file is (``demo.json`` lists them too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.config import DEFAULT_ARTIFACTS_DIR, DemoConfig, to_dict
from exporter.core.manifest import MANIFEST_NAME
from exporter.core.runfolder import DEMO_JSON, MODEL_CARD_MD, TRAIN_JSON, WEIGHTS_NAME, open_run

if TYPE_CHECKING:
    from exporter.bench.result import BenchReport
    from exporter.core.runfolder import Run
    from exporter.optimize.optimize import OptimizeResult
    from exporter.train.common import TrainEvent
    from exporter.verify.result import ParityReport

DEMO_SCHEMA_VERSION = 1

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
    optimize: OptimizeResult | None = None
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

    def variants(self) -> list[dict[str, Any]]:
        """One ``{variant, artifact, status, reason}`` per optimized variant."""
        if self.optimize is None:
            return []
        return [
            {"variant": v.variant, "artifact": v.artifact, "status": v.status, "reason": v.reason}
            for v in self.optimize.variants
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": DEMO_SCHEMA_VERSION,
            "command": "demo",
            "run_dir": str(self.run_dir),
            "config": to_dict(self.config),
            "environment": self.bench.environment,
            "machine": self.bench.machine,
            "val_accuracy": self.val_accuracy,
            "verify_verdict": self.verify.verdict,
            "verdicts": self.verdicts(),
            "verify_skipped": self.verify.skipped,
            "fastest": self.bench.fastest_summary(),
            "variants": self.variants(),
            "recommendations": self.bench.recommendations,
            "bench_skipped": self.bench.skipped,
            "step_seconds": self.step_seconds,
            "total_seconds": sum(self.step_seconds.values()),
            "files": self.files,
        }


def run_demo(cfg: DemoConfig, *, progress: DemoProgress | None = None) -> DemoResult:
    """Train → export → optimize → verify → bench into one new run folder
    (``artifacts/demo-<UTC time>`` unless ``cfg.out_dir``); write ``demo.json``.

    Returns:
        The result; ``passed`` is False when a parity gate failed (the CLI exits 1). A
        variant that ``tlx optimize``'s gate rejects is kept aside and reported, not a failure.

    Raises:
        UsageError / InputFileError: bad settings or a bad ``--weights`` file (exit 2), or
            ``out_dir`` already holds a run.
        EnvironmentUnavailable: a runtime named in ``cfg.runtimes`` cannot run here (exit 3).
    """
    from exporter.bench.bench import bench_run
    from exporter.core.config import BenchConfig, ExportConfig, OptimizeConfig, VerifyConfig
    from exporter.core.fsio import write_json
    from exporter.export.export import export_run
    from exporter.optimize.optimize import optimize_run
    from exporter.verify.verify import verify_run

    say = progress or (lambda *_: None)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(cfg.out_dir) if cfg.out_dir else Path(DEFAULT_ARTIFACTS_DIR) / f"demo-{stamp}"
    seconds: dict[str, float] = {}

    def step(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` with its progress shown under ``name``, timed."""
        t0 = time.perf_counter()
        out = fn(*args, progress=lambda d, done, total: say(f"{name}: {d}", done, total))
        seconds[name] = time.perf_counter() - t0
        return out

    trained = step("train", _train, cfg, run_dir)
    # Opened once for the later stages: train.json is read and the weights hashed once.
    run = open_run(run_dir)
    step("export", export_run, run, ExportConfig(formats=cfg.formats, seed=cfg.seed))
    optimized = None
    if cfg.variants:
        optimized = step(
            "optimize", optimize_run, run, OptimizeConfig(variants=cfg.variants, seed=cfg.seed)
        )
    samples = min(cfg.verify_samples, cfg.val_size)
    verify_cfg = VerifyConfig(runtimes=cfg.runtimes, samples=samples, seed=cfg.seed)
    parity = step("verify", verify_run, run, verify_cfg)
    bench_cfg = BenchConfig(
        runtimes=cfg.runtimes,
        batch_sizes=cfg.batch_sizes,
        warmup=cfg.warmup,
        iters=cfg.iters,
        iters_per_round=min(BenchConfig.iters_per_round, cfg.iters),
        seed=cfg.seed,
    )
    bench = step("bench", bench_run, run, bench_cfg)
    result = DemoResult(
        run_dir=run_dir,
        config=cfg,
        val_accuracy=trained.best_val_accuracy,
        verify=parity,
        bench=bench,
        optimize=optimized,
        step_seconds=seconds,
        files=_files(run, parity, bench, optimized),
    )
    write_json(run_dir / DEMO_JSON, result.to_dict())
    return result


def _train(cfg: DemoConfig, run_dir: Path, *, progress: DemoProgress) -> Any:
    from exporter.core.config import DataConfig, TrainConfig
    from exporter.train import fit

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
    )

    def events(event: TrainEvent) -> None:
        if (shown := event.stage_progress()) is not None:
            progress(*shown)

    return fit(train_cfg, progress=events)


def _files(
    run: Run, parity: ParityReport, bench: BenchReport, optimized: OptimizeResult | None
) -> dict[str, str]:
    verify_json, verify_md = parity.files
    run_dir = run.run_dir
    return {
        "run folder": str(run_dir),
        "weights": str(run_dir / WEIGHTS_NAME),
        "train report": str(run_dir / TRAIN_JSON),
        "manifest": str(run_dir / MANIFEST_NAME),
        **{f"artifact {name}": str(run_dir / name) for name in sorted(run.manifest.artifacts)},
        **({"optimize report": str(optimized.report_path)} if optimized else {}),
        "verify report": str(verify_json),
        "verify summary": str(verify_md),
        **{f"bench {Path(p).suffix[1:]}": p for p in bench.files.values()},
        "model card": str(run_dir / MODEL_CARD_MD),  # written by bench_run
        "demo report": str(run_dir / DEMO_JSON),
    }

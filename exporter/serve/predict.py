"""``tlx predict``: classify image files with a run's artifact; JSON and CSV renderings.

Unreadable images are collected, not raised: the others are still predicted, and
:func:`unreadable_fails` says whether the command fails for them (exit 2 unless ``skip_bad``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.config import PredictConfig
from exporter.core.errors import UsageError
from exporter.core.report import Progress
from exporter.serve.images import BadImage, expand_inputs
from exporter.serve.predictor import Prediction, load


@dataclass
class PredictResult:
    """What ``predict_images`` did: predictions in input order and the files it could not use."""

    run_dir: Path
    artifact: str
    runtime: str
    device: str
    predictions: list[Prediction]
    bad: list[BadImage] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # the model's, in output order

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "artifact": self.artifact,
            "runtime": self.runtime,
            "device": self.device,
            "predictions": [p.to_dict() for p in self.predictions],
            "unreadable": [{"source": b.source, "reason": b.reason} for b in self.bad],
        }


def predict_images(
    run: str | Path,
    inputs: Sequence[str | Path],
    cfg: PredictConfig | None = None,
    *,
    on_error: Callable[[BadImage], None] | None = None,
    progress: Progress | None = None,
    keep_logits: bool = False,
) -> PredictResult:
    """Expand ``inputs`` (files, folders, globs), load the run's artifact, predict every image.

    Args:
        inputs: image files, folders (searched recursively) and glob patterns.
        on_error: also called for each unreadable image as it is met.
        keep_logits: keep each image's raw logits (``render_csv``'s ``logit`` column).

    Raises:
        UsageError: bad options, an input that matches nothing, unknown variant or runtime.
        InputFileError / IntegrityError: bad run folder or manifest; a changed artifact.
        RuntimeUnavailable: the runtime cannot run on the device here (exit 3).
    """
    cfg = cfg or PredictConfig()  # its values were checked when it was built
    paths = expand_inputs(inputs)
    bad: list[BadImage] = []

    def record(item: BadImage) -> None:
        bad.append(item)
        if on_error is not None:
            on_error(item)

    with load(
        run,
        runtime=cfg.runtime,
        variant=cfg.variant,
        device=cfg.device,
        threads=cfg.threads,
        public_key=cfg.public_key,
    ) as predictor:
        preds = predictor.predict(
            paths,
            top_k=cfg.top_k,
            batch_size=cfg.batch_size,
            progress=progress,
            on_error=record,
            keep_logits=keep_logits,
        )
        return PredictResult(
            run_dir=predictor.artifact.run_dir,
            artifact=predictor.artifact.name,
            runtime=predictor.runtime_name,
            device=cfg.device,
            predictions=preds,
            bad=bad,
            classes=list(predictor.classes),
        )


def unreadable_fails(predicted: int, failed: int, *, skip_bad: bool) -> bool:
    """Whether the unreadable images (each named already) fail the command; a UsageError
    when ``skip_bad`` left no image."""
    if failed and not skip_bad:
        return True
    if not predicted:
        raise UsageError(f"--skip-bad: none of the {failed} images could be read")
    return False


def render_json(result: PredictResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False)


CSV_COLUMNS = ("source", "rank", "class", "probability")
LOGIT_COLUMN = "logit"  # --logits: the raw logit of the row's class


def render_csv(result: PredictResult, classes: Sequence[str] | None = None) -> str:
    """One row per image × rank (long format: the same columns for any ``--top-k``); with
    ``classes`` (the model's, in output order) and kept logits, a ``logit`` column too."""
    index = {name: i for i, name in enumerate(classes)} if classes is not None else None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((*CSV_COLUMNS, LOGIT_COLUMN) if index is not None else CSV_COLUMNS)
    for p in result.predictions:
        for rank, (name, prob) in enumerate(p.top, start=1):
            row = [p.source, rank, name, f"{prob:.6f}"]
            if index is not None and p.logits is not None:
                row.append(f"{float(p.logits[index[name]]):.6f}")
            writer.writerow(row)
    return buf.getvalue()

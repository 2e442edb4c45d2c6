"""``tlx predict RUN INPUT --engine ray``: the same predictions on a Ray cluster.

The image paths are a Ray Dataset; ``map_batches`` runs them through a pool of actors, each
holding one :func:`exporter.serve.predictor.load` predictor (the same artifact choice,
preprocessing, decoding and top-k as in-process ``tlx predict``: no second predictor).
Each actor asks Ray for ``threads`` CPUs and gives its runtime that many intra-op threads,
so actors x threads never exceeds the CPUs Ray has. Rows come back in input order and are
streamed into one output file (Parquet, CSV or JSON lines by suffix) with the columns of
``tlx predict --format csv``; unreadable images go to a failures file with their reason.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.config import PredictConfig
from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.serve.images import expand_inputs
from exporter.serve.predict import CSV_COLUMNS

RAY_OUTPUTS = (".parquet", ".csv", ".jsonl")
SCALE_HINT = 'pip install -e ".[scale]"'
ERROR_COLUMN = "error"  # internal: the failure's reason, "" on prediction rows


@dataclass
class RayPredictResult:
    """What ``predict_ray`` wrote."""

    output: Path
    failures_path: Path
    artifact: str
    images: int
    rows: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    actors: int = 1
    threads: int = 1
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def require_ray() -> Any:
    """``ray`` with Ray Data and pyarrow, or exit 3 naming the install."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        raise EnvironmentUnavailable(
            f"--engine ray needs Ray Data ({exc.name or exc} is missing): {SCALE_HINT}"
        ) from exc
    return ray


def check_output(output: str | Path | None) -> Path:
    """``--output`` is given and ends in one of :data:`RAY_OUTPUTS`."""
    if output is None:
        raise UsageError(
            f"--engine ray writes a file: give --output PATH ({', '.join(RAY_OUTPUTS)})"
        )
    path = Path(output)
    if path.suffix.lower() not in RAY_OUTPUTS:
        raise UsageError(f"--output {str(path)!r}: end it in {', '.join(RAY_OUTPUTS)}")
    if not path.parent.is_dir():
        raise UsageError(f"--output {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    return path


def failures_path_for(output: Path) -> Path:
    """``out.parquet`` → ``out.failures.csv`` (next to the output)."""
    return output.with_name(f"{output.stem}.failures.csv")


class _Classify:
    """One actor: one predictor, reused for every batch Ray hands it."""

    def __init__(self, run: str, cfg: PredictConfig, variant: str) -> None:
        from exporter.serve.predictor import load

        self.top_k = cfg.top_k
        self.predictor = load(
            run, runtime=cfg.runtime, variant=variant, device=cfg.device, threads=cfg.threads
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        # Read by absolute path (a worker's working folder is not the driver's); report
        # the spelling the user gave, as in-process predict does.
        spelling = dict(zip(map(str, batch["path"]), map(str, batch["source"]), strict=True))
        bad: list[tuple[str, str]] = []
        preds = self.predictor.predict(
            list(spelling),
            top_k=self.top_k,
            batch_size=max(1, len(spelling)),
            on_error=lambda b: bad.append((spelling.get(b.source, b.source), b.reason)),
        )
        out: dict[str, list[Any]] = {c: [] for c in (*CSV_COLUMNS, ERROR_COLUMN)}
        for p in preds:
            for rank, (name, prob) in enumerate(p.top, start=1):
                row = (spelling.get(p.source, p.source), rank, name, prob)
                for col, value in zip(CSV_COLUMNS, row, strict=True):
                    out[col].append(value)
                out[ERROR_COLUMN].append("")
        for source, reason in bad:
            for col, value in zip(CSV_COLUMNS, (source, 0, "", float("nan")), strict=True):
                out[col].append(value)
            out[ERROR_COLUMN].append(reason)
        return out


def predict_ray(
    run: str | Path,
    inputs: Sequence[str | Path],
    cfg: PredictConfig,
    *,
    output: str | Path | None,
    address: str | None = None,
) -> RayPredictResult:
    """Classify ``inputs`` on Ray and write ``output`` (and the failures file).

    Args:
        run: the run folder.
        inputs: image files, folders and globs (as ``tlx predict``).
        cfg: the predict settings; ``threads`` is per actor (default 1).
        output: ``.parquet``, ``.csv`` or ``.jsonl``.
        address: a Ray cluster (``ray.init(address=...)``); None: the running one or a local.

    Raises:
        UsageError: bad ``--output``, inputs that match nothing.
        EnvironmentUnavailable: Ray is not installed or has no CPU.
    """
    from exporter.serve.choice import choose

    out_path = check_output(output)
    ray = require_ray()
    paths = expand_inputs(inputs)
    choice = choose(run, device=cfg.device, variant=cfg.variant, runtime=cfg.runtime)
    threads = cfg.threads or 1
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < threads:
        raise EnvironmentUnavailable(
            f"the Ray cluster has {cpus} CPU(s); --threads {threads} per actor needs at least that"
        )
    actors = max(1, min(cpus // threads, len(paths)))
    actor_cfg = PredictConfig(
        runtime=choice.runtime, device=cfg.device, top_k=cfg.top_k, threads=threads
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in input order, as in-process
    t0 = time.perf_counter()
    items = [{"source": str(p), "path": str(p.resolve())} for p in paths]
    ds = ray.data.from_items(items).map_batches(
        _Classify,
        fn_constructor_args=(str(Path(run).resolve()), actor_cfg, choice.artifact.name),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=threads,
    )
    rows, failures = _write(ds, out_path)
    seconds = time.perf_counter() - t0
    fail_path = failures_path_for(out_path)
    _write_failures(fail_path, failures)
    return RayPredictResult(
        output=out_path,
        failures_path=fail_path,
        artifact=choice.artifact.name,
        images=len(paths),
        rows=rows,
        failures=failures,
        actors=actors,
        threads=threads,
        seconds=seconds,
    )


def _write(ds: Any, path: Path) -> tuple[int, list[tuple[str, str]]]:
    """Stream the dataset's batches into ``path`` (atomically); failures kept apart."""
    import pyarrow as pa

    from exporter.core.fsio import atomic_path

    schema = pa.schema(
        [
            ("source", pa.string()),
            ("rank", pa.int64()),
            ("class", pa.string()),
            ("probability", pa.float64()),
        ]
    )
    failures: list[tuple[str, str]] = []
    rows = 0
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        sink = _Sink(tmp, suffix, schema)
        try:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                err = batch[ERROR_COLUMN]
                good = err == ""
                failures += [
                    (str(s), str(r))
                    for s, r in zip(batch["source"][~good], err[~good], strict=True)
                ]
                table = pa.table({c: batch[c][good] for c in CSV_COLUMNS}, schema=schema)
                sink.write(table)
                rows += table.num_rows
        finally:
            sink.close()
    return rows, failures


class _Sink:
    """One output file: Parquet through pyarrow, CSV as ``tlx predict``, or JSON lines."""

    def __init__(self, path: Path, suffix: str, schema: Any) -> None:
        import pyarrow.parquet as pq

        self.suffix = suffix
        self.parquet = pq.ParquetWriter(str(path), schema) if suffix == ".parquet" else None
        self.text = None if self.parquet else open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        if suffix == ".csv" and self.text is not None:
            self.csv = csv.writer(self.text, lineterminator="\n")
            self.csv.writerow(CSV_COLUMNS)

    def write(self, table: Any) -> None:
        if self.parquet is not None:
            self.parquet.write_table(table)
            return
        assert self.text is not None
        for row in table.to_pylist():
            if self.suffix == ".csv":
                self.csv.writerow(
                    [row["source"], row["rank"], row["class"], f"{row['probability']:.6f}"]
                )
            else:
                self.text.write(json.dumps(row, allow_nan=False) + "\n")

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.text is not None:
            self.text.close()


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    from exporter.core.fsio import write_text

    lines = [["source", "reason"], *failures]
    text = "".join(",".join(_csv_cell(c) for c in line) + "\n" for line in lines)
    write_text(path, text)


def _csv_cell(value: str) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()

"""``tlx predict RUN INPUT --engine ray``: the same predictions on a Ray cluster.

The image paths are a Ray Dataset; ``map_batches`` runs them through a pool of actors, each
holding one :func:`exporter.serve.predictor.load` predictor (the same artifact choice,
preprocessing, decoding and top-k as in-process ``tlx predict``: no second predictor).
Each actor asks Ray for ``threads`` CPUs and gives its runtime that many intra-op threads,
so actors x threads never exceeds the CPUs Ray has. Rows come back in input order and are
streamed into one output file (Parquet, CSV or JSON lines by suffix) with the columns of
``tlx predict --format csv`` (``logit`` on request); unreadable images go to a failures file
with their reason. With a public key the signature is checked here, on the driver, once; each
actor only confirms that the files it reads first still have the digests just checked.

Where the time goes (benchmarks/ray_bar.py): each actor's start (a Ray worker importing ray
and Ray Data, then the predictor's imports and the model load; the preprocessing is PIL and
NumPy, so an ONNX or OpenVINO artifact's actor never imports torch) happens once per actor;
after it, one block per batch keeps Ray's per-task work to one object-store round trip per
batch.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.config import PredictConfig
from exporter.core.errors import EnvironmentUnavailable, IntegrityError, UsageError
from exporter.core.manifest import MANIFEST_NAME
from exporter.core.runfolder import TRAIN_JSON
from exporter.serve.images import BadImage
from exporter.serve.predict import CSV_COLUMNS, LOGIT_COLUMN
from exporter.serve.ray_plan import actor_plan, block_count, task_images

RAY_OUTPUTS = (".parquet", ".csv", ".jsonl")
SCALE_HINT = 'pip install -e ".[scale]"'
ERROR_COLUMN = "error"  # internal: the failure's reason, "" on prediction rows
# What an actor reads of a signed run before its artifact's manifest hash check.
PINNED = (MANIFEST_NAME, TRAIN_JSON)
# What an actor imports before its first task (Ray Data's worker side, the predictor).
PRELOAD = "ray.data,exporter.serve.ray_predict,exporter.serve.predictor"


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
    first_rows_s: float = 0.0  # until the first rows came back: actors' start, model load

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


class _Classify:
    """One actor: one predictor, reused for every batch Ray hands it."""

    def __init__(
        self, run: str, cfg: PredictConfig, variant: str, logits: bool, pinned: dict[str, str]
    ) -> None:
        from exporter.serve.predictor import load

        check_pinned(run, pinned)  # the files the driver's signature check vouched for
        self.top_k, self.batch_size = cfg.top_k, cfg.batch_size
        self.logits = logits
        self.predictor = load(
            run, runtime=cfg.runtime, variant=variant, device=cfg.device, threads=cfg.threads
        )
        self.index = {name: i for i, name in enumerate(self.predictor.classes)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from exporter.serve.ray_inputs import is_uri, read_uri

        # Each item as predict takes it: a path (read as in-process) or a URI's decoded
        # image; ``names`` maps what predict will call it back to the user's spelling.
        items: list[Any] = []
        names: dict[str, str] = {}
        bad: list[tuple[str, str]] = []
        for source, where in zip(map(str, batch["source"]), map(str, batch["path"]), strict=True):
            if not is_uri(where):
                names[where] = source
                items.append(where)
                continue
            img = read_uri(where)
            if isinstance(img, BadImage):
                bad.append((source, img.reason))
            else:
                names[f"<image {len(items)}>"] = source
                items.append(img)
        preds = self.predictor.predict(
            items,
            top_k=self.top_k,
            batch_size=self.batch_size,  # runtime calls as in-process: the same batches
            on_error=lambda b: bad.append((names.get(b.source, b.source), b.reason)),
            keep_logits=self.logits,
        )
        out: dict[str, list[Any]] = {c: [] for c in (*CSV_COLUMNS, LOGIT_COLUMN, ERROR_COLUMN)}
        for p in preds:
            for rank, (name, prob) in enumerate(p.top, start=1):
                logit = float(p.logits[self.index[name]]) if p.logits is not None else 0.0
                row = (names.get(p.source, p.source), rank, name, prob, logit, "")
                for col, value in zip(out, row, strict=True):
                    out[col].append(value)
        for source, reason in bad:
            for col, value in zip(out, (source, 0, "", float("nan"), 0.0, reason), strict=True):
                out[col].append(value)
        return out


def check_pinned(run: str | Path, pinned: dict[str, str]) -> None:
    """Each file of ``pinned`` (relative to ``run``) still has that sha256.

    Raises:
        IntegrityError: one differs or is gone (it changed after the driver's check).
    """
    import hashlib

    for rel, digest in pinned.items():
        path = Path(run) / rel
        try:
            got = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise IntegrityError(f"{path}: unreadable after the signature check: {exc}") from exc
        if got != digest:
            raise IntegrityError(
                f"{path} changed after the driver checked the signature; rerun the command"
            )


def predict_ray(
    run: str | Path,
    inputs: Sequence[str | Path],
    cfg: PredictConfig,
    *,
    output: str | Path | None,
    address: str | None = None,
    progress: bool = True,
    logits: bool = False,
) -> RayPredictResult:
    """Classify ``inputs`` on Ray and write ``output`` (and the failures file).

    Args:
        run: the run folder.
        inputs: image files, folders, globs (as ``tlx predict``), ``.txt`` lists of paths
            or URIs (:mod:`exporter.serve.ray_inputs`).
        cfg: the predict settings; ``threads`` is per actor (default: ``RUN/tune.json``'s
            threads per instance when it applies, else 1); ``public_key`` is checked here,
            once, before any actor starts.
        output: ``.parquet``, ``.csv`` or ``.jsonl``; ``logits``: add the ``logit`` column.
        address: a Ray cluster (``ray.init(address=...)``); None: the running one or a local.
        progress: Ray Data's progress bars.

    Raises:
        UsageError: bad ``--output``, inputs that match nothing.
        EnvironmentUnavailable: Ray is not installed or has no CPU.
        IntegrityError: ``public_key`` given and the signature check failed.
    """
    from exporter.serve.choice import choose
    from exporter.serve.ray_inputs import ray_inputs

    out_path = check_output(output)
    ray = require_ray()
    images = ray_inputs(inputs)
    pinned = signed_digests(run, cfg.public_key) if cfg.public_key is not None else {}
    choice = choose(run, device=cfg.device, variant=cfg.variant, runtime=cfg.runtime)
    connect(ray, address)
    actors, threads = actor_plan(run, cfg, choice, int(ray.cluster_resources().get("CPU", 0)))
    actor_cfg = replace(cfg, runtime=choice.runtime, threads=threads, public_key=None)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows in input order, as in-process
    ctx.enable_progress_bars = progress
    t0 = time.perf_counter()
    items = [{"source": source, "path": where} for source, where in images]
    task = task_images(len(items), cfg.batch_size, actors)
    blocks = block_count(len(items), task)
    actors = min(actors, blocks)  # an actor without a task would only cost its start
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        _Classify,
        fn_constructor_args=(
            str(Path(run).resolve()),
            actor_cfg,
            choice.artifact.name,
            logits,
            pinned,
        ),
        batch_size=task,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
    )
    rows, failures, first = _write(ds, out_path, logits=logits)
    seconds = time.perf_counter() - t0
    fail_path = out_path.with_name(f"{out_path.stem}.failures.csv")  # beside the output
    _write_failures(fail_path, failures)
    return RayPredictResult(
        output=out_path,
        failures_path=fail_path,
        artifact=choice.artifact.name,
        images=len(images),
        rows=rows,
        failures=failures,
        actors=actors,
        threads=threads,
        seconds=seconds,
        first_rows_s=(first - t0) if first is not None else seconds,
    )


def connect(ray: Any, address: str | None) -> None:
    """``ray.init`` unless connected: ``address``, else the running cluster or a local one.

    Raises:
        EnvironmentUnavailable: nothing answers at ``address`` (checked first: Ray itself
            retries a wrong address for over a minute), or Ray refused the connection.
    """
    if ray.is_initialized():
        return
    if address is not None:
        check_reachable(address)
    # Ray lowers its workers' priority by 15 (nice) so that its raylet stays responsive; on
    # a machine shared with other work that leaves the actors about 1/7 of the CPU in-process
    # `tlx predict` would get. A local Ray started here runs them at tlx's own priority (a
    # running cluster keeps its own setting; a value the user set is kept).
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray's experimental worker preload (ray-project/ray#33572): the workers a local Ray
    # prestarts import Ray Data and the actor's module while the driver plans, instead of
    # after an actor lands on them (~1 s of each actor's start on 2 cores).
    os.environ.setdefault("RAY_preload_python_modules", PRELOAD)
    refused = (ConnectionError, getattr(ray.exceptions, "AuthenticationError", ConnectionError))
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except refused as exc:
        why = " ".join(str(exc).split())
        where = address or os.environ.get("RAY_ADDRESS")
        if where is None:
            raise EnvironmentUnavailable(f"a local Ray did not start: {why}") from exc
        raise EnvironmentUnavailable(
            f"Ray cluster {where}: {why} (a cluster that uses token authentication needs "
            "RAY_AUTH_MODE=token and its token here too: RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from exc


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address accepts a TCP connection within
    ``timeout_s``; other forms (``auto``, ``local``) are Ray's to resolve."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EnvironmentUnavailable(
            f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or check the address"
        ) from exc


def signed_digests(run: str | Path, public_key: str | Path) -> dict[str, str]:
    """Check the run's signature here, once; the files every actor reads before its own
    manifest check (the manifest, the training record) pinned to the digests just checked."""
    from exporter.sign.verification import verify_signature

    check = verify_signature(Path(run), public_key)
    return {rel: check.digests[rel] for rel in PINNED if rel in check.digests}


def _write(
    ds: Any, path: Path, *, logits: bool = False
) -> tuple[int, list[tuple[str, str]], float | None]:
    """Stream the dataset's batches into ``path`` (atomically); failures kept apart.
    Also returns when the first batch came back (``time.perf_counter()``)."""
    import pyarrow as pa

    from exporter.core.fsio import atomic_path

    fields = [
        ("source", pa.string()),
        ("rank", pa.int64()),
        ("class", pa.string()),
        ("probability", pa.float64()),
    ]
    schema = pa.schema([*fields, (LOGIT_COLUMN, pa.float64())] if logits else fields)
    failures: list[tuple[str, str]] = []
    rows = 0
    first: float | None = None
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        sink = _Sink(tmp, suffix, schema)
        try:
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                first = first or time.perf_counter()
                err = batch[ERROR_COLUMN]
                good = err == ""
                failures += [
                    (str(s), str(r))
                    for s, r in zip(batch["source"][~good], err[~good], strict=True)
                ]
                table = pa.table({c: batch[c][good] for c in schema.names}, schema=schema)
                sink.write(table)
                rows += table.num_rows
        finally:
            sink.close()
    return rows, failures, first


class _Sink:
    """One output file: Parquet through pyarrow, CSV as ``tlx predict``, or JSON lines."""

    def __init__(self, path: Path, suffix: str, schema: Any) -> None:
        import pyarrow.parquet as pq

        self.suffix = suffix
        self.parquet = pq.ParquetWriter(str(path), schema) if suffix == ".parquet" else None
        self.text = None if self.parquet else open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        if suffix == ".csv" and self.text is not None:
            self.csv = csv.writer(self.text, lineterminator="\n")
            self.csv.writerow(schema.names)

    def write(self, table: Any) -> None:
        if self.parquet is not None:
            self.parquet.write_table(table)
            return
        assert self.text is not None
        for row in table.to_pylist():
            if self.suffix == ".csv":
                # Floats as ``tlx predict --format csv`` prints them.
                self.csv.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row.values()])
            else:
                self.text.write(json.dumps(row, allow_nan=False) + "\n")

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.text is not None:
            self.text.close()


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    """The predictions CSV's dialect: a name with a comma, quote or newline is quoted."""
    import io

    from exporter.core.fsio import write_text

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("source", "reason"), *failures])
    write_text(path, buf.getvalue())

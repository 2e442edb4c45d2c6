"""Readers of the reports later stages act on: ``verify.json``, ``bench.json``, ``tune.json``.

``tlx verify`` and ``tlx bench`` write the first two (``verify/report.py``,
``bench/report.py``); ``serve/choice.py`` (what to ship) and ``bench/recommend.py`` (what to
recommend) read them here, so both apply one device rule (:func:`same_device`). Each row
keeps the sha256 of the file it is about; bench recommends only a file whose hash verify
recorded, the choice also takes a row without one (a report of an older tlx).

``tlx tune`` writes ``tune.json`` (``bench/tune.py``); its plan becomes the defaults of
``tlx serve`` and of the Triton repository (:func:`serve_settings`), so neither stage imports
the other. A plan applies only to what it was measured on: the same artifact and runtime
(when the user names them) and the CPU. An option given on the command line always wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.core.choices import device_kind
from exporter.core.errors import InputFileError, UsageError
from exporter.core.runfolder import BENCH_JSON, TUNE_JSON, VERIFY_JSON


class ReportUnreadable(ValueError):
    """A report file exists but is not the JSON its stage writes (reports are advisory: the
    caller decides whether that is a note or nothing)."""


def same_device(a: str, b: str) -> bool:
    """The device rule: a report made on ``cuda:1`` holds for ``cuda`` (the same kind of
    device, the same kernels); ``cpu`` and ``cuda`` never stand in for each other."""
    try:
        return device_kind(a) == device_kind(b)
    except UsageError:
        return False


@dataclass(frozen=True)
class VerifiedCandidate:
    """One (runtime, artifact) pair ``tlx verify`` judged; ``record`` is its full row."""

    runtime: str
    artifact: str
    passed: bool
    sha256: str | None
    record: dict[str, Any]

    @property
    def top1_agreement_pct(self) -> float | None:
        """Top-1 agreement with eager on the held-out images (else over every input)."""
        heldout = (self.record.get("per_input") or {}).get("heldout") or {}
        overall = self.record.get("overall") or {}
        value = heldout.get("top1_agreement_pct", overall.get("top1_agreement_pct"))
        return None if value is None else float(value)


@dataclass(frozen=True)
class VerifyRecord:
    """What ``verify.json`` says: the device it ran on and every candidate."""

    device: str
    candidates: tuple[VerifiedCandidate, ...]

    def passed_on(self, device: str) -> list[VerifiedCandidate]:
        """The candidates that passed, when verify ran on ``device`` (else none)."""
        if not same_device(self.device, device):
            return []
        return [c for c in self.candidates if c.passed]


@dataclass(frozen=True)
class Recommendation:
    """One ``bench.json`` recommendation."""

    device: str
    batch_size: int
    artifact: str
    runtime: str
    file: str | None
    sha256: str | None


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportUnreadable(f"{path} is unreadable ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise ReportUnreadable(f"{path} is unreadable (not a JSON object)")
    return data


def read_verify(run_dir: str | os.PathLike[str]) -> VerifyRecord | None:
    """``RUN/verify.json``, or None when verify has not run.

    Raises:
        ReportUnreadable: the file is not a verify report.
    """
    path = Path(run_dir) / VERIFY_JSON
    data = _read(path)
    if data is None:
        return None
    try:
        device = str(data["config"]["device"])
        rows = [c for c in data["candidates"] if isinstance(c, dict)]
    except (KeyError, TypeError) as exc:
        raise ReportUnreadable(f"{path} is unreadable ({exc.__class__.__name__})") from exc
    cands = tuple(
        VerifiedCandidate(
            str(c.get("runtime")),
            str(c.get("artifact")),
            c.get("passed") is True,
            _opt_str(c.get("sha256")),
            c,
        )
        for c in rows
    )
    return VerifyRecord(device, cands)


def read_recommendations(run_dir: str | os.PathLike[str], device: str) -> list[Recommendation]:
    """``RUN/bench.json``'s verified recommendations for ``device``, largest batch first;
    none when bench has not run or its report is unreadable (advice, never an error)."""
    try:
        data = _read(Path(run_dir) / BENCH_JSON) or {}
    except ReportUnreadable:
        return []
    recs = data.get("recommendations")
    out = [
        Recommendation(
            device=str(r.get("device")),
            batch_size=_as_int(r.get("batch_size")),
            artifact=str(r.get("artifact")),
            runtime=str(r.get("runtime") or ""),
            file=_opt_str(r.get("file")),
            sha256=_opt_str(r.get("sha256")),
        )
        for r in (recs if isinstance(recs, list) else [])
        if isinstance(r, dict) and r.get("verified") is True
    ]
    mine = [r for r in out if same_device(r.device, device)]
    return sorted(mine, key=lambda r: -r.batch_size)


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


PLAN_KEYS = ("instances", "threads_per_instance", "max_batch", "queue_delay_us")


def read_tune(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RUN/tune.json`` parsed, or None when there is none.

    Raises:
        InputFileError: the file is not a tune report with a complete ``plan``.
    """
    path = Path(run_dir) / TUNE_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        plan = data["plan"]
        if not all(isinstance(plan[k], int) and plan[k] >= 0 for k in PLAN_KEYS):
            raise ValueError("plan values must be non-negative integers")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            f"{path}: not a tune report ({exc.__class__.__name__}: {exc}); rerun `tlx tune "
            f"{run_dir}` or delete the file"
        ) from exc
    return data


def serve_settings(
    run_dir: str | os.PathLike[str],
    given: dict[str, int | None],
    *,
    device: str,
    variant: str | None,
    runtime: str | None = None,
) -> tuple[dict[str, int | None], bool]:
    """The served model's max_batch, max_queue_delay_us, instances and threads (fields of
    :class:`~exporter.core.config.TritonConfig`, for ``tlx serve`` and the packaged Triton
    repository): each the value given on the command line, else the tuned one (None: the
    config's default). Returns the settings and whether any came from the plan.

    The plan applies on the CPU, when ``variant`` is None or names the tuned artifact (its
    variant or file name) and ``runtime`` is None (a repository: the server's backend runs
    it) or the tuned runtime. Instances and threads go together: given either, neither is
    taken from the plan (the tuned threads were measured for the tuned instance count).
    """
    data = read_tune(run_dir)
    tuned: dict[str, int] = {}
    if (
        data is not None
        and device.startswith("cpu")
        and variant in (None, data.get("variant"), data.get("artifact"))
        and runtime in (None, data.get("runtime"))
    ):
        plan = {k: int(data["plan"][k]) for k in PLAN_KEYS}
        tuned = {"max_batch": plan["max_batch"], "max_queue_delay_us": plan["queue_delay_us"]}
        if given.get("instances") is None and given.get("threads") is None:
            tuned |= {"instances": plan["instances"], "threads": plan["threads_per_instance"]}
    out = {k: v if v is not None else tuned.get(k) for k, v in given.items()}
    return out, any(given.get(k) is None for k in tuned)

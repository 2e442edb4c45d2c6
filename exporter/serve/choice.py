"""Which artifact of a run to serve, and with which runtime.

Shared by ``tlx predict``, ``tlx serve`` and ``tlx export --format triton``, so all three
ship the same file. Only files listed in ``manifest.json`` are candidates (every one is
hash-checked again before a runtime loads it). Default order:

1. ``bench.json``'s recommendation for the device (measured fastest, verified), if the
   artifact is still in the manifest with the same file and hash;
2. else the preferred variant that passed ``tlx verify`` on the device (``verify.json``),
   for the file the manifest lists now;
3. else ``model.onnx`` on ONNX Runtime (checked against eager when it was exported).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.choices import device_kind
from exporter.core.errors import RuntimeUnavailable, UsageError, shown
from exporter.core.runfolder import WEIGHTS_NAME
from exporter.core.runreports import (
    ReportUnreadable,
    VerifiedCandidate,
    read_recommendations,
    read_verify,
)
from exporter.runtimes import load_all
from exporter.runtimes.base import Artifact, Runtime, get_runtime

if TYPE_CHECKING:
    from exporter.core.runfolder import Run

ONNX_DEFAULT = "model.onnx"
EAGER_NAMES = ("eager", "safetensors", WEIGHTS_NAME)
# When nothing was benched: a pruned model first (it exists only because the user asked for
# one within their accuracy budget, and it has fewer FLOPs), then int8 and the pooling fold on
# CPUs, fp16 on GPUs (an int8 QDQ graph runs partly in fp32 on ORT's CUDA provider).
# Unlisted variants rank last.
PREFERENCE = {
    "cpu": ("pruned-int8", "pruned", "fold-int8", "int8", "int8-dynamic", "fold", None, "fp16"),
    "cuda": ("pruned", "fp16", "fold", None, "pruned-int8", "fold-int8", "int8", "int8-dynamic"),
}
# The runtime a format runs on when none is named (ONNX: ort-cpu or ort-cuda by device).
FORMAT_RUNTIME = {"torchscript": "torchscript", "pt2": "pt2", "safetensors": "eager"}


@dataclass(frozen=True)
class Choice:
    """The artifact to run, the runtime's name, and why this one (for reports)."""

    artifact: Artifact
    runtime: str
    reason: str


def choose(
    run: Run | str | Path,
    *,
    device: str = "cpu",
    variant: str | None = None,
    runtime: str | None = None,
    formats: Iterable[str] | None = None,
    check_available: bool = True,
) -> Choice:
    """Choose the artifact (and runtime) to run on ``device``.

    Args:
        variant: a variant name (``fold-int8``) or manifest artifact name (``model.onnx``,
            ``model.safetensors`` for the eager weights); None = the default order above.
        runtime: a registered runtime name; None = the one recorded or the format's default.
        formats: only artifacts of these formats (the Triton export takes ``onnx`` only).
        check_available: False when the artifact is shipped elsewhere rather than run here
            (the Triton export for a GPU server, made on a CPU machine).

    Raises:
        UsageError: unknown runtime or variant, or the runtime cannot run the artifact.
        InputFileError: bad run folder or manifest (or none: run ``tlx export`` first).
        RuntimeUnavailable: the runtime cannot run on ``device`` here (exit 3).
    """
    from exporter.runtimes.selection import artifacts_of_run

    kind = device_kind(device)
    cls = get_runtime(runtime) if runtime is not None else None
    arts = artifacts_of_run(run)  # the weights (hash from the manifest) + every manifest entry
    runnable = {f for c in load_all().values() for f in c.formats}
    allowed = set(formats) if formats is not None else runnable
    arts = [a for a in arts if a.format in allowed]
    if variant is not None:
        art = _named(arts, variant, allowed if formats is not None else None)
        name = cls.name if cls else _recorded_runtime(art, kind) or _default_runtime(art, kind)
        _check_pair(get_runtime(name), art, kind, check_available)
        return Choice(art, name, "--variant")
    if cls is not None:
        _check_device(cls, kind)
        arts = [a for a in arts if cls.supports(a, kind)]
        if not arts:
            raise UsageError(
                f"--runtime {cls.name}: the run has no {'/'.join(cls.formats)} artifact "
                f"for {kind} (run `tlx export` with that format)"
            )
    choice = _default_choice(arts, kind, cls, check_available)
    _check_pair(get_runtime(choice.runtime), choice.artifact, kind, check_available)
    return choice


def _named(arts: list[Artifact], variant: str, allowed: set[str] | None) -> Artifact:
    """The artifact ``variant`` names (variant name, manifest name, or the eager weights)."""
    for art in arts:
        if variant in (art.name, art.metadata.get("variant")) or (
            art.format == "safetensors" and variant in EAGER_NAMES
        ):
            return art
    choices = sorted({a.metadata.get("variant") or a.name for a in arts})
    only = f" ({'/'.join(sorted(allowed))} only)" if allowed else ""
    raise UsageError(
        f"--variant {shown(variant)}: the run has no such artifact{only}; choose from: "
        f"{', '.join(choices) or 'none (run `tlx export` / `tlx optimize` first)'}"
    )


def _check_pair(cls: type[Runtime], art: Artifact, kind: str, check_available: bool) -> None:
    if art.format not in cls.formats:
        raise UsageError(
            f"--runtime {cls.name} runs {'/'.join(cls.formats)} files, not {art.name} "
            f"({art.format})"
        )
    _check_device(cls, kind)
    reason = cls.unavailable_reason(kind) if check_available else None
    if reason:
        raise RuntimeUnavailable(f"--runtime {cls.name}: {reason}")


def _check_device(cls: type[Runtime], kind: str) -> None:
    if kind not in cls.devices:
        raise UsageError(
            f"--runtime {cls.name} runs on {'/'.join(cls.devices)} only, not {kind}: "
            "pass --device to match"
        )


def _default_runtime(art: Artifact, kind: str) -> str:
    return f"ort-{kind}" if art.format == "onnx" else FORMAT_RUNTIME.get(art.format, "ort-cpu")


def _recorded_runtime(art: Artifact, kind: str) -> str | None:
    """The runtime a passing verify candidate used for ``art`` on this device, if any."""
    for cand in _passed_candidates(art.run_dir, kind):
        if cand.artifact == art.name and _same_file(cand.sha256, art):
            return cand.runtime
    return None


def _usable(runtime: str, art: Artifact, kind: str, check_available: bool) -> bool:
    """A runtime named in a report is registered here, runs the artifact, and (when asked) can
    run on this machine: a report from another machine must not stop the choice."""
    cls = load_all().get(runtime)
    if cls is None or not cls.supports(art, kind):
        return False
    return not check_available or cls.unavailable_reason(kind) is None


def _default_choice(
    arts: list[Artifact], kind: str, cls: type[Runtime] | None, check_available: bool
) -> Choice:
    by_name = {a.name: a for a in arts}
    run_dir = arts[0].run_dir if arts else None
    if run_dir is not None:
        for rec in read_recommendations(run_dir, kind):
            art = by_name.get(rec.artifact)
            if art is None or (cls is not None and rec.runtime != cls.name):
                continue
            if rec.file not in (None, art.path.relative_to(art.run_dir).as_posix()):
                continue
            if _same_file(rec.sha256, art) and _usable(rec.runtime, art, kind, check_available):
                return Choice(art, rec.runtime, f"bench.json recommendation for {kind}")
        passed = [
            (c, by_name[c.artifact])
            for c in _passed_candidates(run_dir, kind)
            if c.artifact in by_name
            and _same_file(c.sha256, by_name[c.artifact])
            and (cls is None or c.runtime == cls.name)
            and _usable(c.runtime, by_name[c.artifact], kind, check_available)
        ]
        if passed:
            cand, art = min(passed, key=lambda p: _rank(p[1], kind))
            return Choice(art, cand.runtime, f"passed tlx verify on {kind}")
    onnx = by_name.get(ONNX_DEFAULT)
    if onnx is not None and (cls is None or cls.supports(onnx, kind)):
        why = "no variant passed tlx verify here: checked against eager at export"
        return Choice(onnx, cls.name if cls else _default_runtime(onnx, kind), why)
    if not arts:
        raise UsageError("the run has no artifact to run: run `tlx export RUN` first")
    art = min(arts, key=lambda a: _rank(a, kind))
    return Choice(art, cls.name if cls else _default_runtime(art, kind), "preferred format")


def _rank(art: Artifact, kind: str) -> tuple[int, str]:
    order = PREFERENCE[kind]
    variant = art.metadata.get("variant")
    if art.format == "safetensors":
        return (len(order) + 2, art.name)  # the eager weights: the last resort
    if art.format != "onnx":
        return (len(order) + 1, art.name)
    return (order.index(variant) if variant in order else len(order), art.name)


def _same_file(sha256: str | None, art: Artifact) -> bool:
    """A report row is about this file unless it records a different sha256."""
    return sha256 is None or sha256 == art.sha256


def _passed_candidates(run_dir: Path, kind: str) -> list[VerifiedCandidate]:
    """verify.json's passing candidates when it ran on ``kind`` (an unreadable report is
    advice missing, not an error)."""
    try:
        record = read_verify(run_dir)
    except ReportUnreadable:
        return []
    return record.passed_on(kind) if record is not None else []

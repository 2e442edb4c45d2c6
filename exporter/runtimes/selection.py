"""Which artifacts a run has and which runtimes can run each: shared by verify and bench.

Artifacts are built generically from the manifest entries, so the variants that
``tlx export`` and ``tlx optimize`` add (``model.fp16.onnx``, ``model.fold.onnx``,
``model.int8.onnx``) need no change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.core.choices import ALL, device_kind
from exporter.core.errors import RuntimeUnavailable, UsageError
from exporter.core.manifest import ArtifactEntry, Manifest
from exporter.core.runfolder import Run, open_run
from exporter.runtimes.base import Artifact, Runtime, get_runtime

SAFETENSORS = "safetensors"


@dataclass(frozen=True)
class Skipped:
    """A runtime (or runtime × artifact) left out, with the reason."""

    runtime: str
    artifact: str | None
    reason: str

    def to_dict(self) -> dict[str, str | None]:
        return {"runtime": self.runtime, "artifact": self.artifact, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """The (runtime class, artifact) pairs to run, and what was skipped and why."""

    pairs: list[tuple[type[Runtime], Artifact]]
    skipped: list[Skipped]


def reference_artifact(info: Run, manifest: Manifest | None) -> Artifact:
    """The trained weights as an artifact (for eager and compile), hash from the manifest."""
    src = manifest.source if manifest is not None else None
    return Artifact(
        run_dir=info.run_dir,
        name=info.weights_path.name,
        format=SAFETENSORS,
        precision="fp32",
        num_classes=info.num_classes,
        image_size=info.preprocessing.image_size,
        sha256=src.sha256 if src else None,
        files=((src.path, src.sha256, src.bytes),) if src else (),
        metadata={"source": info.weights_path.name},
        run=info,
    )


def artifact_from_entry(info: Run, entry: ArtifactEntry, metadata: dict) -> Artifact:
    """Build an :class:`Artifact` from one manifest entry (any format or variant)."""
    fixed = entry.input_constraints.get("fixed_hw")
    if fixed is not None and (
        not isinstance(fixed, list | tuple) or len(fixed) != 2 or fixed[0] != fixed[1]
    ):
        raise UsageError(
            f"manifest.json: artifact {entry.name} has input_constraints.fixed_hw={fixed!r}; "
            "expected [H, W] with H == W (re-export with `tlx export RUN --force`)"
        )
    image_size = int(fixed[0]) if fixed else info.preprocessing.image_size
    return Artifact(
        run_dir=info.run_dir,
        name=entry.name,
        format=entry.format,
        precision=entry.precision,
        num_classes=info.num_classes,
        image_size=image_size,
        fixed_hw=fixed is not None,
        sha256=entry.files[0].sha256,
        files=tuple((f.path, f.sha256, f.bytes) for f in entry.files),
        metadata={"entry": entry.to_dict(), "variant": entry.variant, "shared": metadata},
        run=info,
    )


def artifacts_of_run(run_dir: Run | str | Path, *, require_manifest: bool = True) -> list[Artifact]:
    """The reference weights plus every artifact listed in the run's manifest.

    Each artifact keeps the opened run, so its hash is checked once however often it loads.
    Without ``require_manifest`` a run with no manifest.json gives only the weights
    (unhashed; eager then loads them without a hash check).

    Raises:
        InputFileError: bad run folder or malformed manifest (or missing, when required).
    """
    info = open_run(run_dir)
    if not require_manifest and not info.has_manifest:
        return [reference_artifact(info, None)]
    manifest = info.manifest
    return [reference_artifact(info, manifest)] + [
        artifact_from_entry(info, entry, manifest.metadata) for entry in manifest.artifacts.values()
    ]


def parse_runtimes(spec: str | list[str] | tuple[str, ...]) -> list[str] | str:
    """``"all"`` or a comma-separated / listed set of names → ``"all"`` or a list of names."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names or names == [ALL]:
        return ALL
    if ALL in names:
        raise UsageError("--runtimes: use 'all' alone or a list of names, not both")
    # Unknown names are a usage error before any file is read (cheap checks first).
    for name in names:
        get_runtime(name)
    return list(dict.fromkeys(names))


def plan(
    run_dir: Run | str | Path,
    runtimes: list[str] | str,
    device: str,
    *,
    artifacts: list[Artifact] | None = None,
) -> Plan:
    """Pair every selected runtime (``"all"``: every registered one) with every artifact it
    can run on ``device``; ``artifacts`` defaults to :func:`artifacts_of_run`.

    Raises:
        UsageError: unknown runtime name, or a named runtime has no artifact to run.
        RuntimeUnavailable: a named runtime cannot run on ``device`` here (exit 3).
    """
    from exporter.runtimes import load_all

    device_kind(device)  # the one device rule: cpu, cuda or cuda:N
    registry = load_all()
    explicit = runtimes != ALL
    names = list(runtimes) if explicit else list(registry)
    classes = [get_runtime(n) for n in names]
    arts = artifacts if artifacts is not None else artifacts_of_run(run_dir)
    pairs: list[tuple[type[Runtime], Artifact]] = []
    skipped: list[Skipped] = []
    for cls in classes:
        reason = cls.unavailable_reason(device)
        if reason:
            if explicit:
                raise RuntimeUnavailable(f"--runtimes {cls.name}: {reason}")
            skipped.append(Skipped(cls.name, None, reason))
            continue
        mine = [a for a in arts if cls.supports(a, device)]
        if not mine:
            formats = "/".join(cls.formats)
            why = f"the run has no {formats} artifact (run `tlx export` with that format)"
            if explicit:
                raise UsageError(f"--runtimes {cls.name}: {why}")
            skipped.append(Skipped(cls.name, None, why))
            continue
        pairs.extend((cls, a) for a in mine)
    return Plan(pairs=pairs, skipped=skipped)

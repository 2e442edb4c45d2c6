"""``tlx export RUN --format triton`` / ``--format kserve``: package a run for a server.

A deployment step, not an export: which artifact to ship is ``serve.choice.choose``'s answer,
read from verify's and bench's verdicts, so packaging runs after them (the export stage writes
model files only). :func:`package_run` refuses to overwrite without ``force``, lists every
file it writes in ``manifest.json`` and writes ``deploy.json``.

For ``kserve`` the manifests are built and checked first (nothing is written when one is
invalid); then the Triton repository is written with the serving plan's instances and threads
(``kserve_plan``) if it is missing (or ``--force``/``--format triton`` asks), else reused only
if its ``config.pbtxt`` runs the plan, so the pod's CPU limit is what its instances' thread
pools add up to; then the manifests are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.config import KSERVE, TRITON, ExportConfig, TritonConfig, to_dict
from exporter.core.errors import InputFileError, UsageError
from exporter.core.fsio import write_json
from exporter.core.manifest import MANIFEST_NAME, Manifest, manifest_path
from exporter.core.report import Progress
from exporter.core.resources import require
from exporter.core.runfolder import DEPLOY_JSON, Run, open_run
from exporter.core.runlock import locks_run
from exporter.core.safepath import guard
from exporter.deploy.kserve import (
    DEPLOYMENT_FILE,
    INFERENCE_SERVICE_FILE,
    KSERVE_DIR,
    KServeResult,
    build_manifests,
    write_manifests,
)
from exporter.deploy.kserve_plan import ServingPlan, serving_plan
from exporter.deploy.triton import TRITON_DIR, TritonResult, package_triton
from exporter.deploy.triton_config import parse_config, require_tritonclient
from exporter.model.footprint import export_need

if TYPE_CHECKING:
    from exporter.export.common import StepFn
    from exporter.export.export import ExportResult

THREADS_KEY = "intra_op_thread_count"  # the onnxruntime backend's parameter


@dataclass(frozen=True)
class PackageResult:
    """What :func:`package_run` wrote: the repository (``triton``, also written for
    ``kserve`` when missing), the Kubernetes manifests, and the report."""

    run_dir: Path
    triton: TritonResult | None
    kserve: KServeResult | None
    manifest_path: Path
    report_path: Path

    def lines(self) -> list[str]:
        """What was written and the command that uses it, for a terminal."""
        out = []
        if (t := self.triton) is not None:
            out += [f"triton: {t.model_dir} from {t.source} ({t.reason})", f"serve it: {t.command}"]
        if (k := self.kserve) is not None:
            out += [
                f"kserve: {', '.join(str(f) for f in k.files)}",
                f"plan: {k.plan.instances} instance(s) x {k.plan.threads} thread(s), "
                f"{k.plan.cores} CPU, target concurrency {k.plan.target_concurrency} "
                f"({k.plan.source})",
                f"apply it: kubectl apply -f {k.files[0]}",
            ]
        return [*out, f"manifest: {self.manifest_path}  report: {self.report_path}"]


@locks_run("export")
def export_and_package(
    run_dir: Run | str | Path, cfg: ExportConfig, *, progress: Progress | None = None
) -> tuple[ExportResult | None, PackageResult | None]:
    """``tlx export``: the model files, then (a deployment step) the triton/kserve packaging,
    under one lock; None for a part that ``cfg.formats`` does not ask for."""
    from exporter.export.export import export_run

    result = export_run(run_dir, cfg, progress=progress) if cfg.model_formats else None
    if len(cfg.model_formats) == len(cfg.formats):
        return result, None
    return result, package_run(run_dir, cfg, progress=progress)


@locks_run("export")
def package_run(
    run_dir: Run | str | Path, cfg: ExportConfig, *, progress: Progress | None = None
) -> PackageResult:
    """Package the run's chosen ONNX artifact for the formats ``triton`` / ``kserve`` of
    ``cfg.formats`` (``cfg.triton``, ``cfg.kserve``, ``cfg.force``).

    Raises:
        UsageError: neither format requested; a bad ``variant``.
        InputFileError: nothing exported yet, or exported from other weights; the output
            exists without ``force``; the existing repository does not run the serving plan.
        IntegrityError: the artifact's hash differs from the manifest.
        GateFailed: a config or manifest fails its schema, or the copy fails its ORT check.
        EnvironmentUnavailable: tritonclient (or, for kserve, the schema packages) missing.
    """
    from exporter.export.metadata import utc_now

    t0 = time.perf_counter()
    formats = [f for f in cfg.formats if f in (TRITON, KSERVE)]
    if not formats:
        raise UsageError("--format: give triton or kserve to package a run for a server")
    require_tritonclient()
    if KSERVE in formats:
        from exporter.deploy.kserve_schema import require_scale

        require_scale()
    info = open_run(run_dir)
    run = info.run_dir
    _refuse_existing(run, cfg)
    size, classes = info.preprocessing.image_size, info.num_classes
    require(export_need(size=size, batch=2, num_classes=classes, files={TRITON: 4}, folder=run))
    manifest = _exported_manifest(info)

    def say(description: str) -> None:
        if progress:
            progress(description, 0, 1)

    def write_triton(tcfg: TritonConfig) -> TritonResult:
        result = package_triton(info, tcfg, force=cfg.force, say=say)
        with info.edit_manifest() as edited:
            edited.artifacts[result.entry.name] = result.entry
        return result

    kserve = None
    if KSERVE in formats:
        triton, kserve = _package_kserve(info, cfg, write_triton, say)
    else:
        triton = write_triton(cfg.triton)
    report = {
        "schema_version": 1,
        "command": "export --format " + ",".join(formats),
        "created_at": utc_now(),
        "run_dir": str(run),
        "config": {"formats": formats, "force": cfg.force, TRITON: to_dict(cfg.triton)},
        "source": manifest.source.to_dict(),
        "results": {TRITON: triton.to_dict() if triton else None},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if kserve is not None:
        report["config"][KSERVE] = to_dict(cfg.kserve)
        report["results"][KSERVE] = kserve.to_dict()
    write_json(run / DEPLOY_JSON, report)
    return PackageResult(run, triton, kserve, manifest_path(run), run / DEPLOY_JSON)


def _exported_manifest(info: Run) -> Manifest:
    """The manifest listing what export/optimize wrote from the weights the run has now."""
    if not info.has_manifest or not info.manifest.artifacts:
        raise InputFileError(
            f"{info.run_dir} has no exported artifact to serve: run `tlx export "
            f"{info.run_dir} --format onnx` (and optionally `tlx optimize`) first"
        )
    manifest = info.manifest
    if manifest.source.sha256 != info.sha256(info.weights_path.name):
        raise InputFileError(
            f"{manifest_path(info.run_dir)} was made from different weights than "
            f"{info.weights_path}: re-export with `tlx export {info.run_dir} --force` first"
        )
    return manifest


def _refuse_existing(run: Path, cfg: ExportConfig) -> None:
    """No file written may be reached through a link; without ``force`` none may exist yet
    (checked before any work, so a refused call writes nothing)."""
    dest = run / TRITON_DIR / cfg.triton.model_name
    for path in (dest, run / TRITON_DIR / "README.md", run / MANIFEST_NAME, run / DEPLOY_JSON):
        guard(path, root=run)
    if cfg.force:
        return
    if TRITON in cfg.formats and (dest.exists() or dest.is_symlink()):
        raise InputFileError(f"{dest} already exists; pass --force to overwrite it")
    folder = run / KSERVE_DIR
    for path in (folder / INFERENCE_SERVICE_FILE, folder / DEPLOYMENT_FILE):
        if KSERVE in cfg.formats and path.exists():
            raise InputFileError(f"{path} already exists; pass --force to overwrite it")


def _package_kserve(
    info: Run, cfg: ExportConfig, write_triton: Callable[[TritonConfig], TritonResult], say: StepFn
) -> tuple[TritonResult | None, KServeResult]:
    """``RUN/kserve`` (and ``RUN/triton/<model>`` when needed): see the module's docstring.

    Raises:
        GateFailed: a manifest fails its schema check (nothing is written).
        InputFileError: the existing repository does not run the plan; a malformed
            ``loadtest.json``.
    """
    t0 = time.perf_counter()
    plan = serving_plan(info.run_dir, cfg.triton.device)
    tcfg = replace(cfg.triton, instances=plan.instances, threads=plan.threads)
    manifests = build_manifests(info, cfg.kserve, tcfg, plan)
    dest = info.run_dir / TRITON_DIR / tcfg.model_name
    triton = None
    if TRITON in cfg.formats or cfg.force or not (dest / "config.pbtxt").exists():
        triton = write_triton(tcfg)
    else:
        _check_repository(dest, plan)
    return triton, write_manifests(info, manifests, cfg.kserve, plan, say=say, started=t0)


def _check_repository(dest: Path, plan: ServingPlan) -> None:
    """The existing repository's ``config.pbtxt`` runs ``plan``'s instances and threads
    (InputFileError if not: ``--force`` rewrites it)."""
    path = dest / "config.pbtxt"
    config = parse_config(path.read_text(encoding="utf-8"), where=str(path))
    instances = sum(max(1, g.count) for g in config.instance_group) or 1
    params = config.parameters
    threads = int(params[THREADS_KEY].string_value) if THREADS_KEY in params else None
    if (instances, threads) != (plan.instances, plan.threads):
        raise InputFileError(
            f"{path} runs {instances} instance(s) x {threads or 'all cores'} thread(s), but "
            f"the serving plan is {plan.instances} x {plan.threads} ({plan.source}); pass "
            "--force to rewrite the repository with the plan"
        )

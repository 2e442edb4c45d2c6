"""``tlx export --format kserve``: the plan, the Triton repository it serves, the manifests.

Order matters for "nothing written when invalid": the manifests are built and checked
first; then the Triton repository is written if it is missing (or ``--force``/``--format
triton`` asks), with the plan's instances and threads; then the manifests are written.
An existing repository is reused only if its ``config.pbtxt`` runs the plan, so the pod's
CPU limit is what its instances' thread pools add up to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core.config import TRITON, ExportConfig
from exporter.core.errors import InputFileError
from exporter.export.kserve import (
    DEPLOYMENT_FILE,
    INFERENCE_SERVICE_FILE,
    KSERVE_DIR,
    KServeResult,
    build_manifests,
    write_manifests,
)
from exporter.export.kserve_plan import ServingPlan, serving_plan
from exporter.export.triton import TRITON_DIR, TritonResult

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.export.common import StepFn

THREADS_KEY = "intra_op_thread_count"  # the onnxruntime backend's parameter


def existing_manifests(run: Path) -> list[Path]:
    """The kserve files already in ``run`` (refused without ``--force``)."""
    folder = run / KSERVE_DIR
    return [p for p in (folder / INFERENCE_SERVICE_FILE, folder / DEPLOYMENT_FILE) if p.exists()]


def export_kserve(
    info: Run,
    cfg: ExportConfig,
    write_triton: Callable[[ExportConfig], TritonResult],
    *,
    say: StepFn | None = None,
) -> tuple[TritonResult | None, KServeResult]:
    """Write ``RUN/kserve`` (and ``RUN/triton/<model>`` when needed).

    Args:
        info: the opened run.
        cfg: the export settings (``cfg.kserve``, ``cfg.triton``).
        write_triton: writes the Triton repository for the given settings (export.py's step,
            which lists it in the manifest).
        say: progress messages.

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
        triton = write_triton(replace(cfg, triton=tcfg))
    else:
        check_repository(dest, plan)
    result = write_manifests(info, manifests, cfg.kserve, plan, say=say, started=t0)
    return triton, result


def check_repository(dest: Path, plan: ServingPlan) -> None:
    """The existing repository's ``config.pbtxt`` runs ``plan``'s instances and threads.

    Raises:
        InputFileError: it runs another plan (the fix: ``--force`` rewrites it).
    """
    from exporter.export.triton_config import parse_config

    path = dest / "config.pbtxt"
    config = parse_config(path.read_text(encoding="utf-8"), where=str(path))
    instances = sum(max(1, g.count) for g in config.instance_group) or 1
    threads = (
        int(config.parameters[THREADS_KEY].string_value)
        if THREADS_KEY in config.parameters
        else None
    )
    if (instances, threads) != (plan.instances, plan.threads):
        raise InputFileError(
            f"{path} runs {instances} instance(s) x {threads or 'all cores'} thread(s), but "
            f"the serving plan is {plan.instances} x {plan.threads} ({plan.source}); pass "
            "--force to rewrite the repository with the plan"
        )

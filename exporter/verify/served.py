"""``tlx verify RUN --server URL``: parity of a running server against the eager reference.

The server is one more candidate: the same seeded random batches and held-out images as
``tlx verify`` go through it (KServe v2 over HTTP), and :func:`record_outputs` judges its
answers under the profile of the precision the server says it serves. The report goes to
``verify-server.json`` / ``.md``, beside (not over) the run's own ``verify.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporter.core.config import VerifyConfig, to_dict
from exporter.core.errors import UsageError
from exporter.core.report import Progress
from exporter.verify.judge import (
    build_inputs,
    error_text,
    infer_reference,
    record_outputs,
    run_batched,
)
from exporter.verify.report import write_reports
from exporter.verify.result import HELDOUT, CandidateResult, ParityReport
from exporter.verify.tolerance import PROFILES, Tolerance, profile_for, profile_name

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.serve.client import ServedModel

RUNTIME_NAME = "triton-http"


def verify_server(
    run_dir: Run | str | Path,
    cfg: VerifyConfig,
    *,
    server: str,
    model_name: str,
    progress: Progress | None = None,
) -> ParityReport:
    """Judge ``server``'s logits on the verify inputs against eager; write verify-server.*.

    Raises:
        InputFileError / IntegrityError: bad run folder, manifest or weights.
        UsageError: the server serves another run's model, or a bad option.
        MalformedAnswer: the server's config or answer breaks the KServe v2 protocol.
        EnvironmentUnavailable: nothing answers at ``server`` (exit 3).
    """
    from exporter.core.envinfo import environment
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.serve.client import MalformedAnswer, TritonHttpClient, check_served_model

    info = open_run(run_dir)
    source = info.manifest.source
    with TritonHttpClient(server) as client:
        served = client.model(model_name)
        notes = check_served_model(info, served)
        tol = _server_profile(info, served, cfg, notes)
        reference = load_reference_model(info, expected=source)
        inputs, labels = build_inputs(info, cfg, notes)
        largest = max(cfg.batch_sizes)
        if progress:
            progress("eager reference", 0, 2)
        ref_out = {k: infer_reference(reference, x, largest) for k, x in inputs.items()}
        if progress:
            progress(f"{RUNTIME_NAME} · {served.artifact or model_name}", 1, 2)
        result = CandidateResult(
            runtime=RUNTIME_NAME,
            artifact=served.artifact or model_name,
            format="server",
            precision=tol.precision,
            tolerance=tol.to_dict(),
            sha256=served.sha256,
            runtime_info={"server": server, **served.to_dict()},
        )

        def infer(x: np.ndarray) -> np.ndarray:
            out = client.infer(
                model_name, x, input_name=served.input_name, output_name=served.output_name
            )
            if out.shape[1] != info.num_classes:
                raise MalformedAnswer(
                    f"--server {server}: answered {out.shape[1]} logits per image; the run "
                    f"has {info.num_classes} classes"
                )
            return out

        try:
            outs = {k: run_batched(infer, x, largest) for k, x in inputs.items()}
        except MalformedAnswer:  # not a verdict on the model: the server broke the protocol
            raise
        except Exception as exc:  # the verdict records why the server failed
            result.error = error_text(exc)
            result.failures.append(f"error: {result.error}")
        else:
            record_outputs(result, outs, ref_out=ref_out, labels=labels, tol=tol)
    if progress:
        progress("done", 2, 2)
    report = ParityReport(
        run_dir=info.run_dir,
        config={**to_dict(cfg), "server": server, "model_name": model_name},
        environment=environment("cpu"),
        inputs={k: {"shape": list(v.shape)} for k, v in inputs.items()},
        candidates=[result],
        skipped=[],
        notes=notes,
    )
    if labels is not None:
        report.inputs[HELDOUT].update(split="val", labels_n=len(labels))
    write_reports(report, server=True)
    return report


def _server_profile(
    info: Run, served: ServedModel, cfg: VerifyConfig, notes: list[str]
) -> Tolerance:
    """The profile of what the server says it serves: a pruned variant (the manifest's variant
    of that file) is judged at the task level; otherwise by its precision (fp32 when it does
    not say)."""
    if max(cfg.batch_sizes) > served.max_batch_size > 0:
        raise UsageError(
            f"--batch-sizes {max(cfg.batch_sizes)}: the server takes at most "
            f"{served.max_batch_size} images per request"
        )
    precision = served.precision
    if precision not in PROFILES:
        notes.append("the server does not say its precision: judged under the fp32 profile")
        precision = "fp32"
    entry = info.manifest.artifacts.get(served.artifact) if served.artifact else None
    name = profile_name(precision, entry.variant if entry is not None else None)
    return profile_for(name, atol=cfg.atol, rtol=cfg.rtol, min_top1=cfg.min_top1)

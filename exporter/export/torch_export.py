"""TorchScript (``torch.jit.trace``) and ``torch.export`` (.pt2) exports.

TorchScript is deprecated upstream (pytorch #70511) but users ask for it, so both ship.
Each file is serialized in memory, written to a temp path, loaded back with its metadata,
compared with eager, and only then moved into place. Serializing to a path would let a full
disk abort the whole process (torch's zip writer throws ``unexpected pos`` from a destructor:
``c10::Error``, exit 134, a partial file left); from memory the write is Python's, checked
against the free space first, so a full disk is exit 3 with nothing left behind.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from exporter.core.errors import GateFailed
from exporter.core.fsio import atomic_path, write_buffer
from exporter.core.manifest import ArtifactEntry
from exporter.export.common import (
    ExportContext,
    FormatResult,
    StepFn,
    check_logits,
    first_line,
    quiet_export,
)
from exporter.export.metadata import BATCH_DIM, METADATA_FILE, artifact_metadata, signature, to_json
from exporter.verify.tolerance import profile_for

TORCHSCRIPT_NAME = "model.ts"
PT2_NAME = "model.pt2"


def export_torchscript(ctx: ExportContext, progress: StepFn | None = None) -> FormatResult:
    """Trace the eval model, save ``model.ts`` with metadata, load back and compare.

    A trace of VGG16 does not bake in the batch size (``flatten(x, 1)``), so the artifact
    takes any batch; it is checked at 1, an odd batch and the largest.
    """
    import torch

    say = progress or (lambda _msg: None)
    inputs, outputs = signature(ctx.info, batch=None)
    meta = artifact_metadata(
        ctx.shared,
        fmt="torchscript",
        precision="fp32",
        inputs=inputs,
        outputs=outputs,
        exporter="torch.jit.trace",
        opset=None,
    )
    say(f"{TORCHSCRIPT_NAME}: tracing")

    def save(out: IO[bytes]) -> None:
        with quiet_export(), torch.no_grad():
            traced = torch.jit.trace(ctx.model, (ctx.example_input(),), check_trace=False)
            torch.jit.save(traced, out, _extra_files={METADATA_FILE: to_json(meta)})

    def load(tmp: Path) -> tuple[Callable[[Any], Any], str]:
        extra = {METADATA_FILE: ""}
        with quiet_export():
            loaded = torch.jit.load(str(tmp), map_location="cpu", _extra_files=extra)
        return loaded.eval(), extra[METADATA_FILE]

    return _write_checked(
        ctx,
        fmt="torchscript",
        name=TORCHSCRIPT_NAME,
        meta=meta,
        save=save,
        load=load,
        batches=tuple(sorted({1, 3, ctx.cfg.batch_size})),
        progress=say,
    )


def export_pt2(ctx: ExportContext, progress: StepFn | None = None) -> FormatResult:
    """``torch.export.export`` with a dynamic batch, saved with metadata, loaded back, compared."""
    import torch

    say = progress or (lambda _msg: None)
    batch = None if ctx.dynamic_batch else ctx.cfg.batch_size
    inputs, outputs = signature(ctx.info, batch=batch)
    meta = artifact_metadata(
        ctx.shared,
        fmt="pt2",
        precision="fp32",
        inputs=inputs,
        outputs=outputs,
        exporter="torch.export.export",
        opset=None,
    )
    say(f"{PT2_NAME}: exporting")

    def save(out: IO[bytes]) -> None:
        dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM)},) if ctx.dynamic_batch else None
        with quiet_export():
            program = torch.export.export(
                ctx.model, (ctx.example_input(),), dynamic_shapes=dynamic_shapes
            )
            torch.export.save(program, out, extra_files={METADATA_FILE: to_json(meta)})

    def load(tmp: Path) -> tuple[Callable[[Any], Any], str]:
        extra = {METADATA_FILE: ""}
        with quiet_export():
            program = torch.export.load(str(tmp), extra_files=extra)
        return program.module(), extra[METADATA_FILE]

    return _write_checked(
        ctx,
        fmt="pt2",
        name=PT2_NAME,
        meta=meta,
        save=save,
        load=load,
        batches=ctx.check_batches,
        progress=say,
    )


def _write_checked(
    ctx: ExportContext,
    *,
    fmt: str,
    name: str,
    meta: dict[str, Any],
    save: Callable[[IO[bytes]], None],
    load: Callable[[Path], tuple[Callable[[Any], Any], str]],
    batches: tuple[int, ...],
    progress: StepFn,
) -> FormatResult:
    import torch

    dest = ctx.run_dir / name
    atol = profile_for("fp32").atol
    with atomic_path(dest) as tmp:
        t0 = time.perf_counter()
        buffer = io.BytesIO()
        try:
            save(buffer)
        except Exception as exc:
            raise GateFailed(f"{name}: export failed ({first_line(exc)})") from exc
        with buffer.getbuffer() as data:
            write_buffer(tmp, data)  # a full disk: DiskFull (exit 3), the temp file removed
        buffer.close()
        export_time = time.perf_counter() - t0
        progress(f"{name}: loading back and comparing with eager")
        t1 = time.perf_counter()
        try:
            module, meta_text = load(tmp)
        except Exception as exc:
            raise GateFailed(
                f"{name}: the saved file does not load back ({first_line(exc)}); not written"
            ) from exc
        if json.loads(meta_text or "null") != json.loads(to_json(meta)):
            raise GateFailed(f"{name}: embedded metadata did not round-trip; not written")
        max_diff = 0.0
        for batch in batches:
            x, ref = ctx.check_pair(batch)
            with torch.inference_mode():
                got = module(torch.from_numpy(x)).detach().float().numpy()
            max_diff = max(max_diff, check_logits(name, got=got, ref=ref, precision="fp32"))
        check_time = time.perf_counter() - t1
        del module
    record = ctx.info.file_record(name)  # hashed once for the whole command
    entry = ArtifactEntry(
        name=name,
        format=fmt,
        files=[record],
        precision="fp32",
        inputs=meta["inputs"],
        outputs=meta["outputs"],
        extra={
            "opset": None,
            "exporter": meta["exporter"],
            "export_time_s": round(export_time, 3),
            "exported_at": meta["exported_at"],
            "check_max_abs_diff": max_diff,
            "check_atol": atol,
        },
    )
    return FormatResult(
        format=fmt,
        name=name,
        path=dest,
        bytes=record.bytes,
        sha256=record.sha256,
        precision="fp32",
        export_time_s=export_time,
        check_time_s=check_time,
        max_abs_diff=max_diff,
        atol=atol,
        batches_checked=batches,
        metadata=meta,
        entry=entry,
    )

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
from exporter.export.common import (
    ODD_BATCH,
    ExportContext,
    FormatResult,
    StepFn,
    check_logits,
    first_line,
    quiet_export,
    written,
)
from exporter.export.metadata import BATCH_DIM, METADATA_FILE, artifact_metadata, to_json

TORCHSCRIPT_NAME = "model.ts"
PT2_NAME = "model.pt2"

Save = Callable[[IO[bytes], str], None]  # (buffer, metadata JSON): serialise into the buffer
Load = Callable[[Path], tuple[Callable[[Any], Any], str]]  # file -> (module, metadata JSON)


def export_torchscript(ctx: ExportContext, progress: StepFn | None = None) -> FormatResult:
    """Trace the eval model, save ``model.ts`` with metadata, load back and compare.

    A trace of VGG16 does not bake in the batch size (``flatten(x, 1)``), so the artifact
    takes any batch; it is checked at 1, an odd batch and the largest.
    """
    import torch

    def save(out: IO[bytes], meta_json: str) -> None:
        with torch.no_grad():
            traced = torch.jit.trace(ctx.model, (ctx.example_input(),), check_trace=False)
            torch.jit.save(traced, out, _extra_files={METADATA_FILE: meta_json})

    def load(tmp: Path) -> tuple[Callable[[Any], Any], str]:
        extra = {METADATA_FILE: ""}
        loaded = torch.jit.load(str(tmp), map_location="cpu", _extra_files=extra)
        return loaded.eval(), extra[METADATA_FILE]

    batches = tuple(sorted({1, ODD_BATCH, ctx.cfg.batch_size}))
    return _write_checked(
        ctx, "torchscript", "torch.jit.trace", None, save, load, batches, progress
    )


def export_pt2(ctx: ExportContext, progress: StepFn | None = None) -> FormatResult:
    """``torch.export.export`` with a dynamic batch, saved with metadata, loaded back, compared."""
    import torch

    def save(out: IO[bytes], meta_json: str) -> None:
        dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM)},) if ctx.dynamic_batch else None
        program = torch.export.export(
            ctx.model, (ctx.example_input(),), dynamic_shapes=dynamic_shapes
        )
        torch.export.save(program, out, extra_files={METADATA_FILE: meta_json})

    def load(tmp: Path) -> tuple[Callable[[Any], Any], str]:
        extra = {METADATA_FILE: ""}
        return torch.export.load(str(tmp), extra_files=extra).module(), extra[METADATA_FILE]

    return _write_checked(
        ctx, "pt2", "torch.export.export", ctx.fixed_batch, save, load, ctx.check_batches, progress
    )


def _write_checked(
    ctx: ExportContext,
    fmt: str,
    exporter: str,
    batch: int | None,
    save: Save,
    load: Load,
    batches: tuple[int, ...],
    progress: StepFn | None,
) -> FormatResult:
    """Save in memory, write, load back with its metadata and compare with eager at
    ``batches``; ``batch`` is the one the signature fixes (None: dynamic)."""
    import torch

    say = progress or (lambda _msg: None)
    name = TORCHSCRIPT_NAME if fmt == "torchscript" else PT2_NAME
    meta = artifact_metadata(
        ctx.shared, ctx.info, fmt=fmt, precision="fp32", batch=batch, exporter=exporter, opset=None
    )
    say(f"{name}: {'tracing' if fmt == 'torchscript' else 'exporting'}")
    with atomic_path(ctx.run_dir / name) as tmp:
        t0 = time.perf_counter()
        buffer = io.BytesIO()
        try:
            with quiet_export():
                save(buffer, to_json(meta))
        except Exception as exc:
            raise GateFailed(f"{name}: export failed ({first_line(exc)})") from exc
        with buffer.getbuffer() as data:
            write_buffer(tmp, data)  # a full disk: DiskFull (exit 3), the temp file removed
        buffer.close()
        export_time = time.perf_counter() - t0
        say(f"{name}: loading back and comparing with eager")
        t1 = time.perf_counter()
        try:
            with quiet_export():
                module, meta_text = load(tmp)
        except Exception as exc:
            raise GateFailed(
                f"{name}: the saved file does not load back ({first_line(exc)}); not written"
            ) from exc
        if json.loads(meta_text or "null") != json.loads(to_json(meta)):
            raise GateFailed(f"{name}: embedded metadata did not round-trip; not written")
        max_diff = 0.0
        for n in batches:
            x, ref = ctx.check_pair(n)
            with torch.inference_mode():
                got = module(torch.from_numpy(x)).detach().float().numpy()
            max_diff = max(max_diff, check_logits(name, got=got, ref=ref, precision="fp32"))
        check_time = time.perf_counter() - t1
        del module
    return written(
        ctx,
        name,
        meta,
        export_time=export_time,
        check_time=check_time,
        max_diff=max_diff,
        batches=batches,
    )

"""ONNX export: dynamo (default) or legacy exporter, fp32 or fp16, checked on ORT CPU.

The file is written to a temp path beside the destination, passes ``onnx.checker`` (full
check) and an ONNX Runtime CPU comparison with eager at batch 1, an odd batch and the largest,
and only then replaces ``model.onnx``: a file that fails its check is never left in place.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.core.errors import EnvironmentUnavailable, GateFailed, UsageError
from exporter.core.fsio import atomic_path
from exporter.core.onnx_safety import check_onnx_file
from exporter.export.common import (
    ExportContext,
    FormatResult,
    StepFn,
    check_logits,
    first_line,
    quiet_export,
    written,
)
from exporter.export.metadata import (
    BATCH_DIM,
    INPUT_NAME,
    OUTPUT_NAME,
    artifact_metadata,
    embed_in_onnx,
)
from exporter.runtimes.ort_sessions import cpu_session

if TYPE_CHECKING:
    import onnx

ONNX_NAME = "model.onnx"
ONNX_FP16_NAME = "model.fp16.onnx"
# ONNX Runtime CPU float16 → float32 tolerances are set in ExportConfig; fp16 min/max below
# are IEEE half limits: constants outside them are clipped instead of becoming 0 / inf.
FP16_MIN_POSITIVE = 5.96e-08
FP16_MAX_FINITE = 65504.0


def onnx_name(precision: str) -> str:
    """The file an ONNX export of ``precision`` writes."""
    return ONNX_FP16_NAME if precision == "fp16" else ONNX_NAME


def export_onnx(ctx: ExportContext, progress: StepFn | None = None) -> FormatResult:
    """Export, check and atomically write ``model.onnx`` (or ``model.fp16.onnx``).

    Raises:
        UsageError: the legacy exporter cannot export this model (use ``--exporter dynamo``).
        GateFailed: the file fails ``onnx.checker`` or its logits differ from eager.
    """
    import onnx

    cfg = ctx.cfg
    name = onnx_name(cfg.precision)
    say = progress or (lambda _msg: None)
    say(f"{name}: exporting ({cfg.exporter} exporter, opset {ctx.opset})")
    t0 = time.perf_counter()
    proto = _export_legacy(ctx) if cfg.exporter == "legacy" else _export_dynamo(ctx)
    if cfg.precision == "fp16":
        say(f"{name}: converting to fp16")
        proto = convert_to_fp16(proto)
    exporter = f"torch.onnx.export(dynamo={cfg.exporter == 'dynamo'})"
    meta = artifact_metadata(
        ctx.shared,
        ctx.info,
        fmt="onnx",
        precision=cfg.precision,
        batch=ctx.fixed_batch,
        exporter=exporter,
        opset=ctx.opset,
    )
    embed_in_onnx(proto, meta)
    with atomic_path(ctx.run_dir / name) as tmp:
        # One self-contained file: VGG16 is far below protobuf's 2 GB message limit.
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        export_time = time.perf_counter() - t0
        del proto  # ~540 MB; the checks below reload from the file
        say(f"{name}: checking (onnx.checker, ORT CPU vs eager)")
        t1 = time.perf_counter()
        max_diff = _check_file(ctx, tmp, name=name, precision=cfg.precision)
        check_time = time.perf_counter() - t1
    return written(
        ctx,
        name,
        meta,
        export_time=export_time,
        check_time=check_time,
        max_diff=max_diff,
        batches=ctx.check_batches,
    )


def _check_file(ctx: ExportContext, path: Path, *, name: str, precision: str) -> float:
    """Structure, ``onnx.checker`` (full) and ORT CPU vs eager; the largest logit difference."""
    import onnx

    check_onnx_file(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # checker raises ValidationError / InferenceError
        raise GateFailed(
            f"{name}: onnx.checker rejected the exported model ({first_line(exc)}); "
            "the file was not written"
        ) from exc
    try:
        session = cpu_session(path)
    except Exception as exc:
        raise GateFailed(
            f"{name}: ONNX Runtime cannot load the exported model ({first_line(exc)}); "
            "the file was not written"
        ) from exc
    max_diff = 0.0
    for batch in ctx.check_batches:
        x, ref = ctx.check_pair(batch)
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as exc:
            raise GateFailed(
                f"{name}: ONNX Runtime failed at batch {batch} ({first_line(exc)}); "
                "the file was not written"
            ) from exc
        max_diff = max(max_diff, check_logits(name, got=got, ref=ref, precision=precision))
    return max_diff


def dynamo_export(
    module: Any, example: Any, *, opset: int, dynamic_batch: bool = True
) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)`` of ``module`` to an in-memory, self-contained proto.

    Used by ``tlx export`` and by ``tlx optimize`` for its fp32 bases, so both export alike.
    """
    import torch

    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM)},) if dynamic_batch else None
    with quiet_export():
        program = torch.onnx.export(
            module,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            external_data=False,
            verbose=False,
        )
    return program.model_proto


def _export_dynamo(ctx: ExportContext) -> onnx.ModelProto:
    try:
        return dynamo_export(
            ctx.model, ctx.example_input(), opset=ctx.opset, dynamic_batch=ctx.dynamic_batch
        )
    except Exception as exc:
        raise GateFailed(
            f"ONNX export (dynamo exporter, opset {ctx.opset}) failed: {first_line(exc)}"
        ) from exc


def _export_legacy(ctx: ExportContext) -> onnx.ModelProto:
    import onnx
    import torch

    x = ctx.example_input()
    buf = io.BytesIO()
    dynamic_axes = (
        {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if ctx.dynamic_batch else None
    )
    try:
        with quiet_export():
            torch.onnx.export(
                ctx.model,
                (x,),
                buf,
                dynamo=False,
                opset_version=ctx.opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as exc:
        # Known: at 32 px adaptive_avg_pool2d's output (7x7) is not a factor of the 1x1 input.
        raise UsageError(
            f"the legacy (TorchScript-based) ONNX exporter cannot export this model at "
            f"{ctx.image_size}x{ctx.image_size} px: {first_line(exc)}. Use --exporter dynamo "
            "(the default)."
        ) from exc
    return onnx.load_from_string(buf.getvalue())


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, fp32 inputs/outputs, constants clipped to the fp16 range.

    Uses the converter that ships inside onnxruntime (``onnxruntime.transformers.float16``).
    """
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError as exc:  # stripped-down onnxruntime builds omit the transformers tools
        raise EnvironmentUnavailable(
            "fp16 export needs onnxruntime.transformers.float16 (part of the onnxruntime "
            f"package), which failed to import: {first_line(exc)}; reinstall onnxruntime"
        ) from exc
    with quiet_export():
        converted = convert_float_to_float16(
            model,
            min_positive_val=FP16_MIN_POSITIVE,
            max_finite_val=FP16_MAX_FINITE,
            keep_io_types=True,
            # Shape inference adds nothing for ORT here and costs seconds on 138M weights.
            disable_shape_infer=True,
        )
    # The converter appends its input Casts at the end of the node list; ONNX requires a
    # topologically sorted graph (onnx.checker rejects it otherwise).
    try:
        OnnxModel.graph_topological_sort(converted.graph)
    except RuntimeError as exc:  # "Graph is not a DAG": a cycle or an input nobody produces
        raise GateFailed(f"fp16 conversion produced an invalid graph ({exc})") from exc
    return converted

"""ONNX Runtime sessions on files tlx made or has checked, with the options every tlx session uses.

The registered runtimes (``exporter.runtimes.ort``) load run artifacts after the manifest hash
check; these helpers serve export's post-write check, optimize's gates and the localizer's
probes, so an ORT session is configured in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def session_options(*, threads: int | None = None, optimize: bool = True) -> Any:
    """The session options every tlx ORT session uses (``threads``: None is ORT's default).

    ``optimize=False`` disables graph optimisations: they may fuse away values a caller
    wants to read (the localizer's per-layer outputs).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # Spin-waiting threads steal the CPU from whatever runs next (eager ran 2x slower right
    # after ORT on 2 cores); verify, bench and optimize interleave ORT with torch.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3  # ORT's own warnings would interleave with our output
    return so


def cpu_session(path: str | Path, *, optimize: bool = True) -> Any:
    """An ORT CPU session on a file tlx has just written or already checked.

    For files tlx made in this command (export's temp file before it is renamed, optimize's
    variants, the localizer's probe copy); run artifacts are loaded by the registered
    runtimes, which check the manifest hash first (and profile through ``Runtime.profile``).
    """
    import onnxruntime as ort

    options = session_options(optimize=optimize)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cuda_session(path: str | Path, *, optimize: bool = True, device_id: int = 0) -> Any:
    """An ORT CUDA session (TF32 off, fp32 stays fp32) on a file tlx made or checked.

    Raises:
        RuntimeUnavailable: ONNX Runtime fell back to the CPU provider (no CUDA build or GPU).
    """
    import onnxruntime as ort

    from exporter.core.errors import RuntimeUnavailable

    cuda = {"device_id": device_id, "use_tf32": 0}
    providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    session = ort.InferenceSession(
        str(path), session_options(optimize=optimize), providers=providers
    )
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeUnavailable(f"{path}: ONNX Runtime fell back to the CPU provider on cuda")
    return session


def cpu_logits(path: str | Path, images: np.ndarray, *, batch: int) -> np.ndarray:
    """Logits of an ONNX file on the CPU provider, ``batch`` images at a time."""
    session = cpu_session(path)
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(images[i : i + batch])})[0]
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(outs).astype(np.float32)

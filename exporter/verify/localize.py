"""Find the first VGG16 layer whose output diverges between the reference and an artifact.

The reference's intermediate activations come from forward hooks on ``features.N``,
``avgpool`` and ``classifier.N``. The candidate's:

* ONNX: a temporary copy of the model with extra graph outputs. The dynamo exporter records
  each node's module path in ``metadata_props["pkg.torch.onnx.name_scopes"]`` (e.g.
  ``['', 'features', 'features.10', 'conv2d_4']``); the last node of each module produces
  that module's output.
* TorchScript: the traced submodules are called one by one in VGG16's forward order.
* .pt2: ``torch.export.unflatten`` restores the module tree, then the same hooks as eager.

The reference runs on the CPU; the candidate runs on the device that verify checked it on
(``device``: a CUDA-only divergence must show up where it happens), fed fp32 inputs. The
first layer with ``max|c - r| > atol + rtol * max|r|`` (the artifact's tolerance profile) is
reported.
"""

from __future__ import annotations

import ast
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from exporter.runtimes.ort_sessions import cpu_session, cuda_session
from exporter.verify.tolerance import Tolerance

LAYER_RE = re.compile(r"^(features|classifier)\.\d+$|^avgpool$")
# int8 and other profiles without atol still need a threshold for "diverged".
FALLBACK_RTOL = 5e-2


def layer_order(model: Any) -> list[str]:
    """VGG16's layers in forward order: features.0..30, avgpool, classifier.0..6."""
    names = [f"features.{i}" for i in range(len(model.features))]
    names.append("avgpool")
    names.extend(f"classifier.{i}" for i in range(len(model.classifier)))
    return names


def _hooked_activations(
    model: Any, x: np.ndarray, names: list[str] | None = None, device: str = "cpu"
) -> dict[str, np.ndarray]:
    import torch

    acts: dict[str, np.ndarray] = {}
    handles = []
    for name in names or layer_order(model):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue  # not in this module tree (e.g. an unflattened program lost it)

        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            # Clone now: VGG's ReLU(inplace=True) overwrites the conv output right after.
            acts[name] = out.detach().float().clone().cpu().numpy()

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
    finally:
        for h in handles:
            h.remove()
    return acts


def _onnx_layer_outputs(model_proto: Any) -> dict[str, str]:
    """Layer name → the ONNX value that is that layer's output (last node of its scope)."""
    last: dict[str, str] = {}
    for node in model_proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes_text = props.get("pkg.torch.onnx.name_scopes")
        if not scopes_text or not node.output:
            continue
        try:
            scopes = ast.literal_eval(scopes_text)
        except (ValueError, SyntaxError):
            continue
        layer = next(
            (s for s in reversed(scopes) if isinstance(s, str) and LAYER_RE.match(s)), None
        )
        if layer:
            last[layer] = node.output[0]
    return last


def _probe_session(path: Path, device: str) -> Any:
    """An unoptimised session on ``device`` (optimisations may fuse away the values read)."""
    if not device.startswith("cuda"):
        return cpu_session(path, optimize=False)
    index = device.partition(":")[2]
    return cuda_session(path, optimize=False, device_id=int(index) if index.isdigit() else 0)


def _onnx_activations(path: Path, x: np.ndarray, device: str = "cpu") -> dict[str, np.ndarray]:
    import onnx

    proto = onnx.load(str(path))
    outputs = _onnx_layer_outputs(proto)
    if not outputs:
        return {}
    existing = {o.name for o in proto.graph.output}
    for value in outputs.values():
        if value not in existing:
            proto.graph.output.append(onnx.ValueInfoProto(name=value))
            existing.add(value)
    with tempfile.TemporaryDirectory(prefix="tlx-localize-") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        onnx.save(proto, str(tmp_path))
        session = _probe_session(tmp_path, device)
        feed_type = session.get_inputs()[0].type
        dtype = np.float16 if feed_type == "tensor(float16)" else np.float32
        names = list(outputs)
        values = session.run(
            [outputs[n] for n in names],
            {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=dtype)},
        )
    return {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values, strict=True)}


def _replayed_activations(module: Any, x: np.ndarray, device: str = "cpu") -> dict[str, np.ndarray]:
    """A TorchScript VGG16's activations: its submodules called one by one in forward order."""
    import torch

    acts: dict[str, np.ndarray] = {}
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    dtype = next(module.parameters()).dtype
    t = t.to(dtype)
    with torch.inference_mode():
        # VGG.forward: features → avgpool → flatten → classifier, replayed module by module.
        for i, child in enumerate(module.features.children()):
            t = child(t)
            acts[f"features.{i}"] = t.float().clone().cpu().numpy()
        t = module.avgpool(t)
        acts["avgpool"] = t.float().clone().cpu().numpy()
        t = torch.flatten(t, 1)
        for i, child in enumerate(module.classifier.children()):
            t = child(t)
            acts[f"classifier.{i}"] = t.float().clone().cpu().numpy()
    return acts


def _module_runtime(artifact: Any, device: str = "cpu") -> Any:
    """The registered runtime that loads ``artifact`` as a torch module on ``device``, loaded."""
    from exporter.runtimes import load_all

    for cls in load_all().values():
        if hasattr(cls, "load_module") and cls.supports(artifact, device):
            runtime = cls(artifact, device)
            runtime.load()  # the manifest hash check comes first, as for verify and bench
            return runtime
    raise ValueError(f"cannot localize artifacts of format {artifact.format!r}")


def candidate_activations(
    artifact: Any, x: np.ndarray, names: list[str], device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Per-layer activations of an artifact (hash-checked before loading) on float32 NCHW
    ``x``, for the reference's layer ``names``. ONNX is read from a probe copy with extra
    graph outputs; torch formats are loaded by their registered runtime."""
    if artifact.format == "onnx":
        # verified_path includes the ONNX structure/external-data check.
        return _onnx_activations(artifact.verified_path(), x, device)
    runtime = _module_runtime(artifact, device)
    try:
        program = getattr(runtime, "program", None)
        if program is not None:  # .pt2: unflatten restores the module tree for the hooks
            import torch

            return _hooked_activations(torch.export.unflatten(program), x, names, device)
        return _replayed_activations(runtime.module, x, device)
    finally:
        runtime.close()


def _strict_fp32(device: str) -> Any:
    import contextlib

    from exporter.runtimes.cuda_math import tf32_mode

    return tf32_mode(False) if device.startswith("cuda") else contextlib.nullcontext()


def localize_divergence(
    reference: Any, artifact: Any, x: np.ndarray, tol: Tolerance, *, device: str = "cpu"
) -> dict[str, Any]:
    """Compare activations layer by layer; return the first diverging layer and the figures.

    The reference runs on the CPU, the candidate on ``device`` (fp32 there with TF32 off, as
    verify ran it).

    Returns:
        ``{"layer": name or None, "layers": [{layer, max_abs_error, scale, limit,
        diverged}], "reason": ...}``; ``layer`` is None when no layer can be compared or
        none diverges (then the difference arises after the last comparable layer).
    """
    ref_acts = _hooked_activations(reference, x)
    with _strict_fp32(device):
        cand_acts = candidate_activations(artifact, x, layer_order(reference), device)
    rtol = tol.rtol if tol.rtol is not None else FALLBACK_RTOL
    rows = []
    first = None
    for name in layer_order(reference):
        if name not in cand_acts or name not in ref_acts:
            continue  # e.g. Dropout layers vanish from exported graphs
        ref, cand = ref_acts[name], cand_acts[name]
        if ref.shape != cand.shape:
            rows.append({"layer": name, "shape_mismatch": [list(ref.shape), list(cand.shape)]})
            continue
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        err = float(np.max(np.abs(cand.astype(np.float64) - ref))) if ref.size else 0.0
        err = err if np.isfinite(err) else float("inf")
        limit = (tol.effective_atol(ref) or 0.0) + rtol * scale
        diverged = not err <= limit
        rows.append(
            {
                "layer": name,
                "max_abs_error": err,
                "scale": scale,
                "limit": limit,
                "diverged": diverged,
            }
        )
        if diverged and first is None:
            first = name
    if not any("max_abs_error" in r for r in rows):
        reason = "no layer names found in the artifact (names are lost by some transforms)"
    elif first is None:
        reason = "no compared layer diverges: the difference arises after the last one"
    else:
        reason = f"first diverging layer: {first}"
    return {"layer": first, "reason": reason, "layers": rows}

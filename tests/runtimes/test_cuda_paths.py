"""CUDA code paths of the runtimes that the CPU can check: TF32 switches restored,
truthful precision labels, ORT IO binding built once, TensorRT profile and cache options.
The same paths on a real GPU are in the ``gpu``-marked tests at the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from exporter.core.errors import RuntimeUnavailable
from exporter.runtimes import REGISTRY, load_all
from exporter.runtimes.cuda_math import (
    TF32_OVERRIDE_ENV,
    flags_for,
    fp32_label,
    tf32_env_override,
    tf32_flags,
    tf32_mode,
)
from exporter.runtimes.ort import OrtCudaRuntime, OrtTensorRTRuntime
from exporter.runtimes.ort_sessions import cuda_session
from exporter.runtimes.selection import artifacts_of_run


def _artifact(run: Path, fmt: str) -> Any:
    return next(a for a in artifacts_of_run(run) if a.format == fmt and a.precision == "fp32")


@pytest.mark.parametrize("allow", [False, True])
def test_tf32_mode_sets_both_flags_and_restores_them(allow: bool) -> None:
    before = tf32_flags()
    with tf32_mode(allow) as inside:
        assert inside == flags_for(allow, before)
        assert tf32_flags() == inside
    assert tf32_flags() == before
    with pytest.raises(KeyError), tf32_mode(allow):
        raise KeyError("boom")
    assert tf32_flags() == before


def test_flags_for_both_torch_apis() -> None:
    new = {"api": "fp32_precision", "matmul": "none", "cudnn_conv": "tf32", "cudnn_rnn": "tf32"}
    assert flags_for(False, new) == {
        "api": "fp32_precision",
        "matmul": "ieee",
        "cudnn_conv": "ieee",
        "cudnn_rnn": "ieee",
    }
    legacy = {"api": "allow_tf32", "matmul": False, "cudnn_conv": True}
    assert flags_for(False, legacy) == {"api": "allow_tf32", "matmul": False, "cudnn_conv": False}


def test_tf32_env_override_is_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TF32_OVERRIDE_ENV, raising=False)
    with tf32_env_override(False):
        assert os.environ[TF32_OVERRIDE_ENV] == "0"
    assert TF32_OVERRIDE_ENV not in os.environ
    with tf32_env_override(True):
        assert TF32_OVERRIDE_ENV not in os.environ


def test_precision_labels_are_truthful(exported_run: Path) -> None:
    load_all()
    ts, onnx = _artifact(exported_run, "torchscript"), _artifact(exported_run, "onnx")
    eager = next(a for a in artifacts_of_run(exported_run) if a.format == "safetensors")
    # No autocast in TorchScript / ORT: bf16 asked of an fp32 file runs (and says) fp32.
    assert REGISTRY["torchscript"](ts, "cpu", precision="bf16").effective_precision() == "fp32"
    assert REGISTRY["ort-cpu"](onnx, "cpu", precision="bf16").effective_precision() == "fp32"
    assert REGISTRY["eager"](eager, "cpu", precision="bf16").effective_precision() == "bf16"
    # fp32 on CUDA says whether TF32 was allowed (constructing a runtime needs no GPU).
    on = REGISTRY["pt2"](_artifact(exported_run, "pt2"), "cuda", options={"tf32": True})
    off = REGISTRY["pt2"](_artifact(exported_run, "pt2"), "cuda", options={"tf32": False})
    assert (on.effective_precision(), off.effective_precision()) == ("tf32", "fp32")
    assert fp32_label("cpu", True) == "fp32"


class _CpuBoundOrt(OrtCudaRuntime):
    """ORT-CUDA's IO-binding path with the buffers on the CPU (the provider is the only change)."""

    name: ClassVar[str] = "ort-bound-cpu"
    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    ort_device: ClassVar[str] = "cpu"

    def _provider_list(self) -> list[Any]:
        return list(self.providers)

    def _before_session(self, ort: Any) -> None:
        pass


def test_ort_io_binding_is_built_once_outside_the_timed_call(exported_run: Path) -> None:
    from exporter.runtimes.ort_sessions import cpu_logits

    art = _artifact(exported_run, "onnx")
    runtime = _CpuBoundOrt(art, "cpu")
    runtime.load()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    prepared = runtime.prepare(x)

    def no_binding() -> Any:
        raise AssertionError("run() must not build an IO binding")

    runtime.session.io_binding = no_binding  # type: ignore[method-assign]
    first = runtime.to_numpy(runtime.run(prepared))
    runtime.synchronize()
    second = runtime.to_numpy(runtime.run(prepared))
    want = cpu_logits(art.path, x, batch=2)
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    runtime.close()


def test_tensorrt_gets_profile_shapes_and_a_cache_in_the_run_folder(exported_run: Path) -> None:
    art = _artifact(exported_run, "onnx")
    trt = OrtTensorRTRuntime(art, "cuda", options={"batch_sizes": (8, 1, 64)})
    try:
        (name, opts), (cuda_name, cuda_opts), _cpu = trt._provider_list()
        assert name == "TensorrtExecutionProvider" and cuda_name == "CUDAExecutionProvider"
        import onnx

        inp = onnx.load(str(art.path), load_external_data=False).graph.input[0].name
        assert opts["trt_profile_min_shapes"] == f"{inp}:1x3x32x32"
        assert opts["trt_profile_opt_shapes"] == f"{inp}:64x3x32x32"
        assert opts["trt_profile_max_shapes"] == f"{inp}:64x3x32x32"
        cache = Path(opts["trt_engine_cache_path"])
        assert opts["trt_engine_cache_enable"] and cache.is_dir()
        assert cache == exported_run / "trt_cache" / "fp32"
        assert cuda_opts["use_tf32"] == 0 and not opts["trt_fp16_enable"]
    finally:
        import shutil

        shutil.rmtree(exported_run / "trt_cache", ignore_errors=True)


# --- on a CUDA device ---------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a CPU-only host")
def test_cuda_session_refuses_a_silent_cpu_fallback(exported_run: Path) -> None:
    # onnxruntime-gpu without a GPU quietly runs on its CPU provider; a "cuda" probe must not.
    with pytest.raises(RuntimeUnavailable, match="fell back to the CPU provider"):
        cuda_session(exported_run / "model.onnx", optimize=False)


@pytest.mark.gpu
def test_tf32_off_makes_cuda_conv_match_the_cpu() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(4, 64, 28, 28), torch.randn(64, 64, 3, 3)
    want = torch.nn.functional.conv2d(x.double(), w.double())
    with tf32_mode(False):
        got = torch.nn.functional.conv2d(x.cuda(), w.cuda()).double().cpu()
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < 1e-5, rel  # IEEE fp32; TF32's 10-bit mantissa gives ~1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["eager", "torchscript", "pt2", "ort-cuda"])
def test_cuda_runtime_matches_the_cpu_reference_with_tf32_off(
    name: str, exported_run: Path
) -> None:
    from exporter.core.runfolder import open_run
    from exporter.model.vgg import load_reference_model
    from exporter.verify.tolerance import compare, gate, profile_for

    load_all()
    cls = REGISTRY[name]
    reason = cls.unavailable_reason("cuda")
    if reason:
        pytest.skip(reason)
    art = next(a for a in artifacts_of_run(exported_run) if cls.supports(a, "cuda"))
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32), dtype=np.float32)
    with torch.inference_mode():
        ref = load_reference_model(open_run(exported_run))(torch.from_numpy(x)).numpy()
    runtime = cls(art, "cuda", options={"tf32": False, "batch_sizes": (8,)})
    with tf32_mode(False):
        runtime.load()
        out = runtime.infer(x)
    runtime.close()
    tol = profile_for("fp32", device="cuda")
    assert gate(compare(ref, out, tol), tol).passed

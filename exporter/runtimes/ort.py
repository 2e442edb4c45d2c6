"""ONNX Runtime: ``ort-cpu``, ``ort-cuda`` and ``ort-trt``.

Before any session exists the file passes the manifest hash check and
``exporter.core.onnx_safety.check_onnx_file`` (external data stays inside the run folder).
ORT silently falls back to the CPU when the CUDA/TensorRT provider fails to load
(onnxruntime #23372, #21424), so the GPU runtimes check ``session.get_providers()`` and
raise RuntimeUnavailable instead of running somewhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.runtimes.base import Runtime, error_line, register
from exporter.runtimes.cuda_math import tf32_env_override
from exporter.runtimes.ort_sessions import session_options
from exporter.runtimes.profiling import PROFILE_WARMUP, RawProfile, parse_ort_trace


class _Bound(NamedTuple):
    """A prepared ORT-CUDA input: the device value, its IO binding and the output buffer."""

    value: Any
    binding: Any
    output: Any


class _OrtRuntime(Runtime):
    """Shared session setup; subclasses choose the providers and the IO path."""

    formats = ("onnx",)
    providers: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)
    fix_hint: ClassVar[str] = "reinstall onnxruntime"
    requested: ClassVar[str] = "CPU"  # what the user asked for, in the fallback message

    def _provider_list(self) -> list[Any]:
        return list(self.providers)

    def _session_options(self) -> Any:
        return session_options(threads=self.threads)

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(
                f"{self.name} needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)"
            ) from exc
        path = self.artifact.verified_path()  # hash + ONNX structure/external-data checks
        self._before_session(ort)
        try:
            self.session = ort.InferenceSession(
                str(path), self._session_options(), providers=self._provider_list()
            )
        except Exception as exc:
            self._session_failed(path, exc)
        self.providers_in_use = list(self.session.get_providers())
        wanted = self.providers[0]
        if not self.providers_in_use or self.providers_in_use[0] != wanted:
            raise RuntimeUnavailable(
                f"{self.requested} requested but ONNX Runtime fell back to "
                f"{self.providers_in_use} ({wanted} failed to load); {self.fix_hint}"
            )
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.input_type = inp.name, inp.type
        self.output_name, self.output_type = out.name, out.type
        self._after_session()

    def _after_session(self) -> None:
        """Provider-specific work once the session exists (e.g. timing an engine build)."""

    def _before_session(self, ort: Any) -> None:
        """Provider-specific preparation (e.g. preloading CUDA libraries)."""

    def _session_failed(self, path: Path, exc: Exception) -> None:
        raise InputFileError(
            f"ONNX Runtime cannot load {path}: {error_line(exc)} "
            "(re-export it with `tlx export RUN --format onnx --force`)"
        ) from exc

    def _input_array(self, x: np.ndarray) -> np.ndarray:
        # fp16 models exported without keep_io_types take float16 inputs.
        dtype = np.float16 if self.input_type == "tensor(float16)" else np.float32
        return np.ascontiguousarray(x, dtype=dtype)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            providers=getattr(self, "providers_in_use", None),
            intra_op_threads=self.threads,
            allow_spinning=False,
        )
        return d

    def profile(self, x: np.ndarray, *, runs: int) -> RawProfile:
        """ORT's own profiler (``enable_profiling``) on a second session, same options."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="tlx-ort-profile-") as tmp:
            options = self._session_options()
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tmp, "ort")
            session = ort.InferenceSession(
                str(self.artifact.verified_path()), options, providers=self._provider_list()
            )
            feed = {self.input_name: self._input_array(x)}
            for _ in range(PROFILE_WARMUP + runs):
                session.run([self.output_name], feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        return parse_ort_trace(events, warmup=PROFILE_WARMUP, runs=runs)

    def close(self) -> None:
        self.session = None


@register
class OrtCpuRuntime(_OrtRuntime):
    """ONNX Runtime on the CPU execution provider (host arrays in and out)."""

    name = "ort-cpu"
    devices = ("cpu",)
    providers = ("CPUExecutionProvider",)

    def prepare(self, x: np.ndarray) -> Any:
        return self._input_array(x)

    def run(self, prepared: Any) -> Any:
        return self.session.run([self.output_name], {self.input_name: prepared})[0]


@register
class OrtCudaRuntime(_OrtRuntime):
    """ONNX Runtime on CUDA with IO binding: input and output stay on the device.

    Without IO binding every ``run`` copies host↔device ("ORT GPU slower than PyTorch",
    onnxruntime #8166), which bench would then measure instead of the model.
    """

    name = "ort-cuda"
    devices = ("cuda",)
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    fix_hint = (
        "onnxruntime-gpu 1.31 needs an NVIDIA driver, CUDA 13 and cuDNN 9 "
        "(onnxruntime.preload_dlls() uses the torch wheels' copies); or use --device cpu "
        "--runtimes ort-cpu"
    )
    requested = "CUDA"

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason:
            return reason
        try:
            import onnxruntime as ort
        except ImportError:
            return f"{cls.name} needs onnxruntime-gpu (pip install onnxruntime-gpu)"
        if cls.providers[0] not in ort.get_available_providers():
            return f"{cls.providers[0]} is not in this onnxruntime build; install onnxruntime-gpu"
        # Listed as available is not proof it loads: load() checks get_providers().
        return None

    def _device_id(self) -> int:
        return int(self.device.split(":", 1)[1]) if ":" in self.device else 0

    def _before_session(self, ort: Any) -> None:
        # onnxruntime-gpu 1.31 needs CUDA 13 / cuDNN 9: preload_dlls() loads the copies the
        # torch wheels installed. Quiet the default logger: the failure is reported by us.
        ort.set_default_logger_severity(4)
        if hasattr(ort, "preload_dlls"):
            # Missing libraries show up as the fallback check below.
            with contextlib.suppress(Exception):
                ort.preload_dlls()

    def _session_failed(self, path: Path, exc: Exception) -> None:
        raise RuntimeUnavailable(
            f"CUDA requested but ONNX Runtime could not create a {self.providers[0]} session "
            f"for {path}: {error_line(exc)}; {self.fix_hint}"
        ) from exc

    def _cuda_options(self) -> dict[str, int]:
        return {"device_id": self._device_id(), "use_tf32": int(self._tf32())}

    def _provider_list(self) -> list[Any]:
        return [(self.providers[0], self._cuda_options()), *self.providers[1:]]

    # Where the bound input/output live ("cpu" only in the CPU test of the binding path).
    ort_device: ClassVar[str] = "cuda"

    def prepare(self, x: np.ndarray) -> Any:
        """The input on the device and its IO binding, built here: outside the timed call.

        ``run`` then only executes; building a binding per call costs tens of microseconds,
        visible at sub-millisecond latencies. The output is bound to a device buffer that is
        allocated once per prepared input.
        """
        import onnxruntime as ort

        dev = self._device_id()
        value = ort.OrtValue.ortvalue_from_numpy(self._input_array(x), self.ort_device, dev)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        out_dtype = np.float16 if self.output_type == "tensor(float16)" else np.float32
        out = ort.OrtValue.ortvalue_from_shape_and_type(
            [x.shape[0], self.artifact.num_classes], out_dtype, self.ort_device, dev
        )
        binding.bind_ortvalue_output(self.output_name, out)
        return _Bound(value, binding, out)

    def run(self, prepared: Any) -> Any:
        self.session.run_with_iobinding(prepared.binding)
        self._binding = prepared.binding
        return prepared.output

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output.numpy(), dtype=np.float32)

    def synchronize(self) -> None:
        binding = getattr(self, "_binding", None)
        if binding is not None:
            binding.synchronize_outputs()

    def close(self) -> None:
        self._binding = None
        super().close()


@register
class OrtTensorRTRuntime(OrtCudaRuntime):
    """ONNX Runtime's TensorRT provider (CUDA then CPU as ORT's own fallbacks, checked).

    Options: ``batch_sizes`` (the batch sizes that will run: the engine's optimisation
    profile spans min..max with opt at the largest, so one engine serves them all instead of
    a rebuild per new batch size), ``trt_cache_dir`` (default ``<run>/trt_cache``: engines
    are keyed by model and settings, so reruns skip the build), ``tf32``. The engine is
    built in :meth:`load` and its build time is reported as ``engine_build_s``.
    """

    name = "ort-trt"
    devices = ("cuda",)
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    fix_hint = (
        "the TensorRT provider needs TensorRT 10 libraries (libnvinfer) on the library "
        "path besides CUDA; or use --runtimes ort-cuda"
    )
    requested = "TensorRT"

    def _batch_range(self) -> tuple[int, int]:
        """The smallest and the largest batch size that will run (the largest is also opt)."""
        sizes = sorted({int(b) for b in self.options.get("batch_sizes") or (1,)})
        return sizes[0], sizes[-1]

    def cache_dir(self) -> Path:
        """Engine cache folder, one per precision and TF32 setting (their engines differ)."""
        root = self.options.get("trt_cache_dir") or self.artifact.run_dir / "trt_cache"
        return Path(root) / self.effective_precision()

    def _provider_list(self) -> list[Any]:
        import onnx

        # The graph input's name, without loading the weights (external data stays on disk).
        input_name = (
            onnx.load(str(self.artifact.path), load_external_data=False).graph.input[0].name
        )
        cache = self.cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        lo, hi = self._batch_range()
        chw = f"3x{self.artifact.image_size}x{self.artifact.image_size}"
        trt: dict[str, Any] = {
            "device_id": self._device_id(),
            "trt_fp16_enable": self.artifact.precision == "fp16",
            "trt_int8_enable": self.artifact.precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_profile_min_shapes": f"{input_name}:{lo}x{chw}",
            "trt_profile_opt_shapes": f"{input_name}:{hi}x{chw}",
            "trt_profile_max_shapes": f"{input_name}:{hi}x{chw}",
        }
        return [
            (self.providers[0], trt),
            (self.providers[1], self._cuda_options()),
            self.providers[2],
        ]

    def load(self) -> None:
        # TensorRT has no TF32 provider option in ORT; NVIDIA's override keeps the engine
        # it builds (during session creation and the first run) in IEEE fp32.
        with tf32_env_override(self._tf32() or self.artifact.precision != "fp32"):
            super().load()

    def _after_session(self) -> None:
        # With explicit profile shapes the engine is built (or read from the cache) by the
        # first run; time it here so bench reports it apart from steady state.
        import time

        size = self.artifact.image_size
        x = np.zeros((self._batch_range()[1], 3, size, size), dtype=np.float32)
        start = time.perf_counter()
        self.session.run([self.output_name], {self.input_name: self._input_array(x)})
        self.engine_build_s = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        lo, hi = self._batch_range()
        d.update(
            profile_batch={"min": lo, "opt": hi, "max": hi},
            engine_cache=str(self.cache_dir()),
            engine_build_s=getattr(self, "engine_build_s", None),
        )
        return d

"""OpenVINO on the CPU: ``openvino`` runs the run's ONNX files (fp32, fp16 and QDQ int8).

What a CPU user would try next to ONNX Runtime, so bench can show whether tlx's own artifacts
beat it. Settings (OpenVINO's CPU plugin documentation, "performance hints"):

- ``INFERENCE_PRECISION_HINT=f32``: the CPU plugin may otherwise run bf16 (or fp16) on CPUs
  that have it, which is not the model tlx verified. QDQ int8 models still run in int8: the
  plugin's low-precision transformations turn QuantizeLinear/DequantizeLinear pairs into int8
  kernels whatever the floating-point precision is.
- ``PERFORMANCE_HINT``: ``LATENCY`` (one stream using every thread) for small batches;
  ``THROUGHPUT`` (several streams) for batches of :data:`THROUGHPUT_MIN_BATCH` and more, where
  the batch is split into one slice per stream and the slices run as parallel requests (a
  single request of a THROUGHPUT model would use one stream's threads only).
- ``INFERENCE_NUM_THREADS``: the thread count bench and verify ask for.

Batch 1 runs a copy of the model reshaped to a static batch of 1: on the 2-core test machine
that was 15-20% faster than the dynamic-batch model (interleaved A/B at 32 px). Every compiled
model holds its own copy of the weights (measured: +520 MB per compile of the 32 px
``model.onnx``), so there are at most three, each made on first use and kept (no recompile
ever lands inside bench's timed loop): static batch 1, dynamic LATENCY for other small
batches, dynamic THROUGHPUT for large ones.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from exporter.core.errors import InputFileError, RuntimeUnavailable
from exporter.runtimes.base import Runtime, error_line, register
from exporter.runtimes.profiling import PROFILE_WARMUP, RawProfile, sum_openvino_counters
from exporter.runtimes.signal_stack import own_signal_stack

LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"
# From this batch size on, the batch is split over THROUGHPUT streams; below it one LATENCY
# request runs it (a slice of one or two images per stream gains nothing).
THROUGHPUT_MIN_BATCH = 16
INSTALL_HINT = "pip install 'openvino>=2024.0' (Linux/Windows/macOS wheels on PyPI)"


def _property_text(value: Any) -> str:
    # Element types print as "<Type: 'float32'>"; their type name is "f32".
    name = getattr(value, "get_type_name", None)
    return str(name()) if callable(name) else str(value)


@register
class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plugin on an ONNX artifact (host arrays in and out)."""

    name = "openvino"
    formats = ("onnx",)
    devices = ("cpu",)

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason:
            return reason
        if importlib.util.find_spec("openvino") is None:
            return f"{cls.name} needs the openvino package: {INSTALL_HINT}"
        return None

    def load(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable(
                f"{self.name} needs the openvino package: {INSTALL_HINT}"
            ) from exc
        path = self.artifact.verified_path()  # hash + ONNX structure/external-data checks
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:
            raise InputFileError(
                f"OpenVINO cannot read {path}: {error_line(exc)} "
                "(re-export it with `tlx export RUN --format onnx --force`)"
            ) from exc
        self._latency: dict[int | None, Any] = {}  # 1 (static) or None (dynamic) -> request
        self._throughput: tuple[Any, Any] | None = None  # (compiled, AsyncInferQueue)
        self._compiled_info: dict[str, dict[str, str]] = {}
        self._latency_request(1)  # a model the plugin cannot compile fails here, not later

    def _config(self, hint: str) -> dict[str, Any]:
        return {
            "PERFORMANCE_HINT": hint,
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": int(self.threads),
        }

    def _compile(self, hint: str, batch: int | None) -> Any:
        model = self._model
        if batch is not None:
            model = model.clone()
            shape = list(model.input(0).get_partial_shape())
            shape[0] = batch
            model.reshape({0: shape})
        try:
            compiled = self._core.compile_model(model, "CPU", self._config(hint))
            own_signal_stack()  # the plugin's own stack is freed with it: see signal_stack.py
        except Exception as exc:
            raise RuntimeUnavailable(
                f"{self.name}: OpenVINO's CPU plugin cannot compile "
                f"{self.artifact.path}: {error_line(exc)}"
            ) from exc
        self._compiled_info[hint if batch is None else f"{hint} batch {batch}"] = {
            key: _property_text(compiled.get_property(key))
            for key in ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT")
        }
        return compiled

    def _latency_request(self, batch: int) -> Any:
        key = 1 if batch == 1 else None
        request = self._latency.get(key)
        if request is None:
            request = self._latency[key] = self._compile(LATENCY, key).create_infer_request()
        return request

    def _throughput_queue(self) -> Any:
        if self._throughput is None:
            import openvino as ov

            compiled = self._compile(THROUGHPUT, None)
            streams = int(compiled.get_property("NUM_STREAMS"))
            self._throughput = (compiled, ov.AsyncInferQueue(compiled, max(streams, 1)))
        return self._throughput[1]

    def run(self, prepared: Any) -> Any:
        batch = int(prepared.shape[0])
        if batch >= THROUGHPUT_MIN_BATCH:
            queue = self._throughput_queue()
            if len(queue) > 1:
                return self._run_streams(queue, prepared)
        request = self._latency_request(batch)
        request.infer({0: prepared})
        # The request reuses its output buffer on the next call: hand out a copy.
        return request.get_output_tensor(0).data.copy()

    @staticmethod
    def _run_streams(queue: Any, x: np.ndarray) -> np.ndarray:
        slices = np.array_split(x, len(queue))
        outs: list[Any] = [None] * len(slices)

        def done(request: Any, index: int) -> None:
            outs[index] = request.get_output_tensor(0).data.copy()

        queue.set_callback(done)
        for i, part in enumerate(slices):
            queue.start_async({0: np.ascontiguousarray(part)}, userdata=i)
        queue.wait_all()
        return np.concatenate(outs)

    def profile(self, x: np.ndarray, *, runs: int) -> RawProfile:
        """OpenVINO's performance counters (``PERF_COUNT``) on a copy compiled for ``x``'s
        shape with the LATENCY hint (the counters are per infer request)."""
        model = self._model.clone()
        model.reshape({0: list(x.shape)})
        config = {**self._config(LATENCY), "PERF_COUNT": True}
        try:
            request = self._core.compile_model(model, "CPU", config).create_infer_request()
            own_signal_stack()
        except Exception as exc:
            raise RuntimeUnavailable(
                f"{self.name}: OpenVINO cannot compile a profiling copy: {error_line(exc)}"
            ) from exc
        data = np.ascontiguousarray(x, dtype=np.float32)
        for _ in range(PROFILE_WARMUP):
            request.infer({0: data})
        per_run = []
        for _ in range(runs):
            request.infer({0: data})
            per_run.append(list(request.get_profiling_info()))
        return sum_openvino_counters(per_run, runs=runs)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["precision"] = self.artifact.precision
        d["openvino"] = {
            "inference_precision_hint": "f32",
            "hints": {
                "batch 1": f"{LATENCY} (static batch of 1)",
                f"batch 2-{THROUGHPUT_MIN_BATCH - 1}": LATENCY,
                f"batch >= {THROUGHPUT_MIN_BATCH}": f"{THROUGHPUT} (batch split over streams)",
            },
            "compiled": dict(getattr(self, "_compiled_info", {})),
        }
        try:
            import openvino as ov

            d["openvino"]["version"] = ov.get_version()
        except ImportError:  # describe() before load(); load() reports the missing package
            pass
        return d

    def close(self) -> None:
        self._latency = {}
        self._throughput = None
        self._model = None

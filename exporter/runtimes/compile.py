"""``torch.compile`` (inductor) of the eager model rebuilt from ``model.safetensors``.

Compilation happens on the first call, so :meth:`CompileRuntime.load` runs one warm-up
batch and records how long it took in ``compile_seconds``: bench keeps that out of its
steady-state numbers but reports it. New batch sizes may recompile once more inside
``run`` (inductor specialises, then marks the batch dimension dynamic).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from exporter.core.errors import RuntimeUnavailable
from exporter.runtimes.base import error_line, register
from exporter.runtimes.eager import EagerRuntime


class _NoCudaRuntimeNote(logging.Filter):
    """Drop inductor's "No CUDA runtime is found, using CUDA_HOME=..." on a CPU compile.

    Inductor's C++ builder imports ``torch.utils.cpp_extension``, which logs that warning
    whenever a CUDA toolkit is installed but no GPU is usable: harmless for a CPU compile, and
    it was the first line ``tlx demo`` printed. ``load`` installs it only for CPU devices.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


_CPP_EXTENSION_LOG = logging.getLogger("torch.utils.cpp_extension")
_QUIET_CPU = _NoCudaRuntimeNote()

# torch.compile modes accepted through options={"mode": ...}; "reduce-overhead" uses
# CUDA graphs and only makes sense on CUDA.
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@register
class CompileRuntime(EagerRuntime):
    """Inductor-compiled eager model. Options: ``mode`` (see MODES), ``warmup_batch`` (1)."""

    name = "compile"
    mode: str | None = None
    compile_seconds: float | None = None

    def build_module(self) -> Any:
        import torch

        mode = str(self.options.get("mode", "default"))
        if mode not in MODES:
            raise RuntimeUnavailable(
                f"compile mode {mode!r} is unknown; choose from: {', '.join(MODES)}"
            )
        if mode == "reduce-overhead" and not self.device.startswith("cuda"):
            raise RuntimeUnavailable(
                "compile mode 'reduce-overhead' (CUDA graphs) needs --device cuda"
            )
        if self.device == "cpu":
            _CPP_EXTENSION_LOG.addFilter(_QUIET_CPU)  # a set: adding it twice is a no-op
        self.mode = mode
        model = super().build_module()
        return torch.compile(model, backend="inductor", mode=None if mode == "default" else mode)

    def load(self) -> None:
        super().load()
        warm = int(self.options.get("warmup_batch", 1))
        size = self.artifact.image_size
        x = np.zeros((warm, 3, size, size), dtype=np.float32)
        # perf_counter here (not in bench.py) because the compile cost is part of what
        # load() does and only this runtime knows when compilation happens.
        start = time.perf_counter()
        try:
            self.infer(x)
        except Exception as exc:  # inductor failures (no C++ compiler, codegen bugs)
            raise RuntimeUnavailable(
                f"torch.compile (inductor, mode {self.mode}) failed on {self.device}: "
                f"{error_line(exc)} (inductor on CPU needs a working C++ "
                "compiler such as gcc; on CUDA it needs triton)"
            ) from exc
        self.compile_seconds = time.perf_counter() - start

    def run(self, prepared: Any) -> Any:
        import torch

        if self.mode == "reduce-overhead":
            # Tell CUDA graphs a new iteration begins, so the previous output buffer may be
            # reused; callers copy outputs (to_numpy) before the next run.
            torch.compiler.cudagraph_mark_step_begin()
        return super().run(prepared)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        # compile_s: the first (compiling) call in load(), seconds; excluded from latency.
        d.update(backend="inductor", mode=self.mode, compile_s=self.compile_seconds)
        return d

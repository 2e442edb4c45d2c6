"""The runtime interface (Polygraphy's runners, slimmed) and its registry.

``parity.py`` and ``bench.py`` take runtimes from :data:`REGISTRY`; neither knows one by
name. Adding a runtime is one new module plus one :func:`register` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from exporter.core.errors import IntegrityError, RuntimeUnavailable, UsageError
from exporter.core.machine import usable_cpus
from exporter.runtimes.cuda_math import fp32_label

if TYPE_CHECKING:
    from exporter.core.runfolder import Run
    from exporter.runtimes.profiling import RawProfile


def error_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__


@dataclass(frozen=True)
class Artifact:
    """What a runtime runs: one model file of a run (or the trained weights for eager).

    Attributes:
        name: the manifest key (``model.onnx``, ``model.fold.int8.onnx``) or
            ``model.safetensors`` for runtimes that rebuild the eager model.
        precision: the artifact's own precision (a runtime may be asked for another).
        fixed_hw: True when the artifact only accepts ``image_size`` (e.g. the pooling fold).
        files: every (relative path, sha256, bytes) of the artifact, checked before load.
        run: the opened run it came from (its hashes and ``train.json`` are reused by
            :meth:`verified_path` and the eager runtime); None for a hand-made artifact.
    """

    run_dir: Path
    name: str
    format: str
    precision: str = "fp32"
    num_classes: int = 10
    image_size: int = 224
    fixed_hw: bool = False
    sha256: str | None = None
    files: tuple[tuple[str, str, int], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    run: Run | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> Path:
        return self.run_dir / self.name

    def verified_path(self) -> Path:
        """The main file's path after every file of the artifact matched its manifest hash.

        Raises:
            IntegrityError: no hashes are recorded, or a file is missing or changed.
            InputFileError: an ONNX file is corrupt or points outside the run folder.
        """
        from exporter.core.manifest import FileRecord, check_file
        from exporter.core.onnx_safety import check_onnx_file

        if not self.files:
            raise IntegrityError(
                f"{self.path} has no sha256 in manifest.json; tlx loads only files it hashed "
                "(re-export with `tlx export RUN --force`)"
            )
        records = [FileRecord(*f) for f in self.files]
        # A hashed file can still be hostile (a manifest can be rewritten too): ONNX must
        # parse, and its external data must stay inside the run folder, before any load.
        onnx = self.path if self.format == "onnx" else None
        if self.run is not None:  # the opened run hashes and parses each file once
            self.run.check_files(records, onnx=onnx)
            return self.path
        for rec in records:
            check_file(self.run_dir, rec)
        if onnx is not None:
            check_onnx_file(onnx)
        return self.path

    def accepts_hw(self, height: int, width: int) -> bool:
        """Whether the artifact takes ``height`` x ``width`` inputs (fixed-size ones take one)."""
        return not self.fixed_hw or (height, width) == (self.image_size, self.image_size)


class Runtime(ABC):
    """One way of running a model. Same contract for parity and bench.

    ``__init__`` is cheap (no heavy import, no session); ``load`` does the heavy work and
    raises :class:`~exporter.core.errors.RuntimeUnavailable` with the fix when it cannot run here.
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # artifact formats this runtime can run
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        *,
        precision: str = "fp32",
        threads: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.artifact = artifact
        self.device = device
        self.precision = precision
        # Never the runtime's own default: ORT and torch count every core of the node, not
        # the cores a container or an affinity mask leaves this process (kserve/kserve #1031).
        self.threads = threads or usable_cpus()
        self.options = dict(options or {})

    @classmethod
    def supports(cls, artifact: Artifact, device: str) -> bool:
        """Whether this runtime can run ``artifact`` on ``device`` at all (cheap check)."""
        return artifact.format in cls.formats and device in cls.devices

    @classmethod
    def unavailable_reason(cls, device: str) -> str | None:
        """Why this runtime cannot run on ``device`` here (cheap, no heavy work), or None.

        A None is not a promise: :meth:`load` still raises RuntimeUnavailable when, e.g.,
        a provider that is listed as available fails to load.
        """
        if device not in cls.devices:
            return f"runtime {cls.name!r} runs on {'/'.join(cls.devices)} only, not {device!r}"
        return None

    @abstractmethod
    def load(self) -> None:
        """Heavy work: imports, hash checks, sessions, compilation."""

    def prepare(self, x: np.ndarray) -> Any:
        """Turn a float32 NCHW host array into this runtime's input (on its device)."""
        return np.ascontiguousarray(x, dtype=np.float32)  # host arrays in: the default

    @abstractmethod
    def run(self, prepared: Any) -> Any:
        """Run on a prepared input; the output stays wherever the runtime keeps it."""

    def to_numpy(self, output: Any) -> np.ndarray:
        """Copy an output of :meth:`run` to a float32 host array."""
        return np.asarray(output, dtype=np.float32)  # host arrays out: the default

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Host in, host out: logits as float32 ``(batch, num_classes)``."""
        out = self.to_numpy(self.run(self.prepare(x)))
        self.synchronize()
        return out

    def synchronize(self) -> None:  # noqa: B027 - a no-op is the right default on CPU
        """Wait for queued device work (CUDA); no-op on CPU."""

    def _tf32(self) -> bool:
        """Whether the caller allowed TF32 for fp32 math (option ``tf32``; CUDA only)."""
        return bool(self.options.get("tf32", False)) and self.device.startswith("cuda")

    def effective_precision(self) -> str:
        """The math this runtime really runs, which the reports print as its precision.

        The artifact's own precision unless a runtime casts (eager/compile autocast): a
        TorchScript or ONNX fp32 file asked for bf16 still runs fp32 and says so. fp32 on
        CUDA with TF32 allowed is named ``tf32``.
        """
        precision = self.artifact.precision
        return fp32_label(self.device, self._tf32()) if precision == "fp32" else precision

    def describe(self) -> dict[str, Any]:
        """What is actually in use: providers, precision, threads, device."""
        return {
            "runtime": self.name,
            "device": self.device,
            "precision": self.effective_precision(),
            "precision_requested": self.precision,
            "tf32": self._tf32() if self.device.startswith("cuda") else None,
            "artifact": self.artifact.name,
            "threads": self.threads,
        }

    def profile(self, x: np.ndarray, *, runs: int) -> RawProfile:
        """Per-node times of ``runs`` runs on ``x`` from the runtime's own profiler.

        Call after :meth:`load`. The profiled session is a separate one (profiling slows
        every run), so :meth:`infer`'s timings stay clean.

        Raises:
            RuntimeUnavailable: this runtime has no per-operator profiler in tlx.
        """
        raise RuntimeUnavailable(f"{self.name} has no per-operator profiler in tlx")

    def close(self) -> None:  # noqa: B027
        """Release sessions and device memory."""


REGISTRY: dict[str, type[Runtime]] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator adding a runtime to :data:`REGISTRY`; a duplicate name is an error."""
    if cls.name in REGISTRY:
        raise ValueError(f"runtime {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_runtime(name: str) -> type[Runtime]:
    """Look a runtime up by name; unknown names are a usage error listing the known ones."""
    from exporter.runtimes import load_all

    load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown runtime {name!r}; choose from: {', '.join(sorted(REGISTRY))}"
        ) from None

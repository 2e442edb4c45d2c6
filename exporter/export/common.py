"""What every exporter shares: the export context, the per-format result, the parity check.

An artifact counts as written only after it was loaded back from its (temp) file and its
logits passed verify's gate against the eager model, under the same profile as ``tlx verify``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.errors import GateFailed
from exporter.core.manifest import ArtifactEntry
from exporter.verify.tolerance import profile_for
from exporter.verify.verdict import judge

if TYPE_CHECKING:
    from torch import nn

    from exporter.core.config import ExportConfig
    from exporter.core.runfolder import Run

# The example batch traced/exported: a batch of 1 gets specialised (pytorch #157621).
EXAMPLE_BATCH = 2
ODD_BATCH = 3

StepFn = Callable[[str], None]
"""``step(description)``: an exporter names its step; ``export_run`` adds how far it is."""


@dataclass
class ExportContext:
    """Everything an exporter needs, built once per ``export_run``.

    ``model`` is the eager fp32 reference (eval mode, CPU); ``shared`` the metadata common to
    all artifacts (:func:`exporter.export.metadata.shared_metadata`).
    """

    run_dir: Path
    info: Run  # the opened run: a written file's record is hashed into its cache
    model: nn.Module
    cfg: ExportConfig
    shared: dict[str, Any]
    opset: int
    _refs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def image_size(self) -> int:
        return self.info.preprocessing.image_size

    @property
    def dynamic_batch(self) -> bool:
        return not self.cfg.static_batch

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the artifact is fixed to, ``None`` for a dynamic batch."""
        return self.cfg.batch_size if self.cfg.static_batch else None

    @property
    def check_batches(self) -> tuple[int, ...]:
        """Batch 1, an odd batch and the largest; only the fixed batch when it is static."""
        if self.cfg.static_batch:
            return (self.cfg.batch_size,)
        return tuple(sorted({1, ODD_BATCH, self.cfg.batch_size}))

    def example_input(self) -> Any:
        """A seeded example batch for tracing/export (values do not matter, shape does)."""
        import torch

        gen = torch.Generator().manual_seed(self.cfg.seed + 1000)
        size = self.image_size
        return torch.randn(self.fixed_batch or EXAMPLE_BATCH, 3, size, size, generator=gen)

    def check_pair(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded random input of ``batch`` images and the eager logits (cached per batch)."""
        if batch not in self._refs:
            import torch

            rng = np.random.default_rng(self.cfg.seed + batch)
            size = self.image_size
            x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
            with torch.inference_mode():
                ref = self.model(torch.from_numpy(x)).numpy()
            self._refs[batch] = (x, ref)
        return self._refs[batch]


@dataclass(frozen=True)
class FormatResult:
    """One written artifact: its file, the manifest entry, and its check against eager.

    ``export_time_s`` is conversion and serialisation (not checking); ``max_abs_diff`` the
    largest logit difference over ``batches_checked`` under tolerance ``atol``.
    """

    format: str
    name: str
    path: Path
    bytes: int
    sha256: str
    precision: str
    export_time_s: float
    check_time_s: float
    max_abs_diff: float
    atol: float
    batches_checked: tuple[int, ...]
    metadata: dict[str, Any]
    entry: ArtifactEntry

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with units in the key names."""
        return {
            "format": self.format,
            "file": self.name,
            "precision": self.precision,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "export_time_s": round(self.export_time_s, 3),
            "check_time_s": round(self.check_time_s, 3),
            "check_max_abs_diff": self.max_abs_diff,
            "check_atol": self.atol,
            "check_batches": list(self.batches_checked),
            "opset": self.metadata.get("opset"),
            "exporter": self.metadata.get("exporter"),
        }


def check_logits(name: str, *, got: np.ndarray, ref: np.ndarray, precision: str) -> float:
    """Judge one batch of logits with the one judge; return the max abs difference.

    The profile is the artifact precision's (:data:`exporter.verify.tolerance.PROFILES`), so a
    file export writes is one verify accepts, and the reverse.

    Raises:
        GateFailed: wrong shape, or the gate's failures (NaN/Inf, beyond tolerance, top-1).
    """
    batch = ref.shape[0]
    if got.shape != ref.shape:
        raise GateFailed(f"{name}: output shape {got.shape} at batch {batch}, eager {ref.shape}")
    verdict = judge(ref, got, profile_for(precision))
    if not verdict.passed:
        raise GateFailed(
            f"{name} vs eager at batch {batch}: {'; '.join(verdict.failures)}; "
            "the file was not written"
        )
    return verdict.max_abs_logit_diff


def written(
    ctx: ExportContext,
    name: str,
    meta: dict[str, Any],
    *,
    export_time: float,
    check_time: float,
    max_diff: float,
    batches: tuple[int, ...],
) -> FormatResult:
    """The result and manifest entry of a checked file now in place in the run folder."""
    precision = meta["precision"]
    record = ctx.info.file_record(name)  # hashed once for the whole command
    atol = profile_for(precision).atol
    entry = ArtifactEntry(
        name=name,
        format=meta["format"],
        files=[record],
        precision=precision,
        inputs=meta["inputs"],
        outputs=meta["outputs"],
        extra={
            "opset": meta["opset"],
            "exporter": meta["exporter"],
            "export_time_s": round(export_time, 3),
            "exported_at": meta["exported_at"],
            "check_max_abs_diff": max_diff,
            "check_atol": atol,
        },
    )
    return FormatResult(
        format=meta["format"],
        name=name,
        path=ctx.run_dir / name,
        bytes=record.bytes,
        sha256=record.sha256,
        precision=precision,
        export_time_s=export_time,
        check_time_s=check_time,
        max_abs_diff=max_diff,
        atol=atol,
        batches_checked=batches,
        metadata=meta,
        entry=entry,
    )


@contextlib.contextmanager
def quiet_export() -> Iterator[io.StringIO]:
    """Silence exporter chatter: the library never prints (torch.onnx prints progress lines).

    Yields the captured stdout so a failure message can quote it.
    """
    buf = io.StringIO()
    with (
        contextlib.redirect_stdout(buf),
        warnings.catch_warnings(),
    ):
        # TorchScript's deprecation (pytorch #70511) and the exporters' advisories are known;
        # tlx ships TorchScript because users ask for it.
        warnings.simplefilter("ignore")
        yield buf


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, shortened."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return exc.__class__.__name__

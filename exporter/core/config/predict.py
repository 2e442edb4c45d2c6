"""Settings of ``tlx predict`` and :func:`exporter.load`."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import device_kind
from exporter.core.config.common import check_int
from exporter.core.errors import UsageError

PREDICT_OUTPUTS = ("table", "json", "csv")
# Bounds of --top-k and --batch-size (also of Predictor.predict's arguments).
MAX_TOP_K = 1000
MAX_BATCH = 1024


@dataclass(frozen=True)
class PredictConfig:
    """Settings of ``tlx predict`` and :func:`exporter.load` (artifact choice and batching).

    Attributes:
        runtime: a registered runtime name; None = the one verify used, or the format's own.
        variant: variant or manifest artifact name; None = bench's recommendation, else the
            preferred variant that passed verify on ``device``, else ``model.onnx``.
        device: ``cpu`` or ``cuda``.
        top_k: classes per image (capped at the number of classes).
        batch_size: images per runtime call.
        output: ``table``, ``json`` or ``csv`` (on stdout).
        skip_bad: skip unreadable images (exit 0) instead of exit 2 at the end.
        threads: runtime intra-op threads (None: the cores this process may use).
        public_key: a PEM public key: the run must match its ``model.sig`` first (None: no
            signature check).
    """

    runtime: str | None = None
    variant: str | None = None
    device: str = "cpu"
    top_k: int = 5
    batch_size: int = 32
    output: str = "table"
    skip_bad: bool = False
    threads: int | None = None
    public_key: str | None = None

    def __post_init__(self) -> None:
        check_int("--top-k", self.top_k, MAX_TOP_K)
        check_int("--batch-size", self.batch_size, MAX_BATCH)
        if self.output not in PREDICT_OUTPUTS:
            raise UsageError(f"--format {self.output!r}: choose from {', '.join(PREDICT_OUTPUTS)}")
        if self.threads is not None:
            check_int("--threads", self.threads, 1024)
        device_kind(self.device)

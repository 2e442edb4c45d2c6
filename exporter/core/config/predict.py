"""Settings of ``tlx predict`` and :func:`exporter.load`."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import DEVICE_HELP, device_kind
from exporter.core.config.common import PUBLIC_KEY_HELP, check_int, opt
from exporter.core.errors import UsageError

PREDICT_OUTPUTS = ("table", "json", "csv")
# Bounds of --top-k and --batch-size (also of Predictor.predict's arguments).
MAX_TOP_K = 1000
MAX_BATCH = 1024


@dataclass(frozen=True)
class PredictConfig:
    """Settings of ``tlx predict`` and :func:`exporter.load` (artifact choice and batching).

    Each field's help is its option's; ``top_k`` is capped at the number of classes.
    """

    runtime: str | None = opt(
        None, help="Runtime (default: the one verify used, or the format's own)."
    )
    variant: str | None = opt(
        None,
        help="Variant or artifact name (fold-int8, model.onnx, eager); default: bench's "
        "recommendation, else the preferred variant that passed verify, else model.onnx.",
    )
    device: str = opt("cpu", help=DEVICE_HELP)
    top_k: int = opt(5, help="Classes per image.")
    batch_size: int = opt(32, help="Images per runtime call.")
    output: str = opt(
        "table", flags=("--format",), help=f"Output on stdout: {', '.join(PREDICT_OUTPUTS)}."
    )
    skip_bad: bool = opt(
        False,
        flags=("--skip-bad",),
        help="Skip unreadable images (exit 0) instead of exit 2.",
    )
    threads: int | None = opt(None, help="Runtime intra-op threads (default: the usable cores).")
    public_key: str | None = opt(None, path=True, help=PUBLIC_KEY_HELP)

    def __post_init__(self) -> None:
        check_int("--top-k", self.top_k, MAX_TOP_K)
        check_int("--batch-size", self.batch_size, MAX_BATCH)
        if self.output not in PREDICT_OUTPUTS:
            raise UsageError(f"--format {self.output!r}: choose from {', '.join(PREDICT_OUTPUTS)}")
        if self.threads is not None:
            check_int("--threads", self.threads, 1024)
        device_kind(self.device)

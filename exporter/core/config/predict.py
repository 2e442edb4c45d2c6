"""Settings of ``tlx predict`` and :func:`exporter.load`."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.choices import DEVICE_HELP, device_kind
from exporter.core.config.common import PUBLIC_KEY_HELP, check_int, opt
from exporter.core.errors import UsageError

PREDICT_OUTPUTS = ("table", "json", "csv")
PREDICT_ENGINES = ("local", "ray")
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


@dataclass(frozen=True)
class EngineConfig:
    """How ``tlx predict`` runs (this process or a Ray Data actor pool) and what it adds to the
    predictions; each field's help is its option's."""

    engine: str = opt(
        "local",
        choices=PREDICT_ENGINES,
        help="local: this process. ray: a Ray Data actor pool (needs --output; --threads per "
        'actor, default: RUN/tune.json\'s plan, else 1; pip install -e ".[scale]").',
    )
    ray_address: str | None = opt(None, help="ray: the cluster (default: a local Ray).")
    logits: bool = opt(
        False,
        flags=("--logits",),
        help="Add a logit column (the raw logit of the row's class) to --format csv and to "
        "--engine ray's output.",
    )
    output_file: str | None = opt(
        None,
        flags=("--output",),
        path=True,
        help="ray: the predictions file (.parquet, .csv or .jsonl; the columns of --format csv); "
        "unreadable images go to OUTPUT-stem.failures.csv.",
    )

    def check(self, output: str) -> None:
        """``--logits`` needs an output with a logit column (``output``: ``--format``)."""
        if self.engine == "local" and self.logits and output != "csv":
            raise UsageError("--logits: use it with --format csv or --engine ray")

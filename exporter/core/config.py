"""Frozen dataclasses for each command's settings: the single source of defaults.

The CLI reads its option defaults from here; the library takes these objects. Each
command owns one section below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_ARTIFACTS_DIR = "artifacts"
# Largest batch any command accepts: 65,536 images of 224 px are already 39 GB of input.
MAX_BATCH_SIZE = 65536


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in asdict(cfg).items()}


# --- train ------------------------------------------------------------------------------

DATA_SOURCES = ("synthetic", "cifar10", "imagefolder")
AUGMENT_MODES = ("auto", "on", "off")
# Below this input side, `--augment auto` trains on un-augmented images: on a real pretrained
# trunk at 32 px, reflect-padded random crop + flip took a 3-epoch head from 0.45 to 0.24
# (benchmarks/RESULTS.md, "Real transfer"); a 4 px shift of a 32 px image moves the object by
# an eighth of its width, and the frozen trunk cannot learn to ignore it.
AUGMENT_MIN_SIZE = 64
# --image-size bounds. Below 32 px VGG16's five 2×2 pools leave no pixel. Above 1024 px
# (4.6× the 224 px its ImageNet weights were trained at) one image needs ~0.8 GiB of
# activations to run and ~2.2 GiB to train on, so batches no longer fit common machines
# (core/resources.py has the arithmetic).
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
SYNTHETIC_TRAIN_SIZE = 2000
SYNTHETIC_VAL_SIZE = 500


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared (``train.json["config"]["data"]``).

    ``train_size``/``val_size`` size the synthetic dataset; for cifar10/imagefolder they are
    ignored. ``limit_train``/``limit_val`` (any source) keep a seeded random subset of a split,
    e.g. a few thousand CIFAR-10 images for a CPU run; ``None`` uses the whole split.
    """

    source: str = "cifar10"
    data_dir: str | None = None
    seed: int = 0
    train_size: int = SYNTHETIC_TRAIN_SIZE
    val_size: int = SYNTHETIC_VAL_SIZE
    image_size: int = 224
    augment: str = "auto"  # "auto" | "on" | "off"; auto: on from AUGMENT_MIN_SIZE px up
    strict: bool = False
    limit_train: int | None = None
    limit_val: int | None = None

    def __post_init__(self) -> None:
        # Older train.json files and API callers say augment=True/False.
        if isinstance(self.augment, bool):
            object.__setattr__(self, "augment", "on" if self.augment else "off")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Rebuild from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECIPES = ("head", "finetune")
LR_AUTO = "auto"
# Linear warm-up at the start of each phase, as a fraction of that phase's steps (at least one
# step): relative, so a 48-step run and a 5,000-step run both warm up for 10% of their steps.
DEFAULT_WARMUP_FRACTION = 0.1
# `--recipe finetune` without --freeze-epochs: this share of the epochs trains the head alone
# (at least 1, leaving at least 1 for the unfrozen phase), e.g. 2 of 5, 4 of 10.
FINETUNE_HEAD_SHARE = 0.4


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``tlx train``; defaults here are the CLI's defaults.

    The defaults were chosen on real transfer tasks (pretrained trunk, new classes; see
    benchmarks/RESULTS.md, "Real transfer"): AdamW at 1e-3, a warm-up of 10% of the steps then
    cosine decay, no augmentation below 64 px. ``lr`` may be ``"auto"``: an LR range test on the
    head picks it. ``recipe="finetune"`` trains the head for ``freeze_epochs`` epochs, then
    unfreezes the top ``unfreeze_from`` conv blocks at ``lr × backbone_lr_mult`` with a fresh
    warm-up (fastai's ``fine_tune``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    weights: str = "imagenet"
    recipe: str = "head"  # "head" | "finetune"
    epochs: int = 10
    batch_size: int = 64
    lr: float | str = 1e-3  # a peak LR, or "auto" (LR range test)
    optimizer: str = "adamw"  # "adamw" | "sgd" (momentum 0.9)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup_epochs: float | None = None  # None: DEFAULT_WARMUP_FRACTION of each phase
    grad_clip: float | None = None
    freeze_epochs: int | None = None  # finetune: head-only epochs (None: FINETUNE_HEAD_SHARE)
    unfreeze_at: int | None = None  # 1-based epoch that starts phase 2 (any recipe)
    unfreeze_from: str = "2"  # "features.N" or a number of conv blocks from the top
    backbone_lr_mult: float = 0.1
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # only on CUDA; CPU always trains in fp32
    channels_last: bool = True  # only on CUDA
    compile: bool = False
    cache_features: str = "auto"  # "auto" | "on" | "off"
    workers: int | None = None  # None: 0 on CPU, min(8, cpu_count) on CUDA
    seed: int = 0
    deterministic: bool = False
    patience: int | None = None  # early stopping: epochs without val improvement
    save_every: int = 1  # checkpoint every N epochs (always at the end and on a signal)
    out: str | None = None  # default artifacts/<dataset>-<UTC time>
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from a dict (e.g. a checkpoint's), ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["data"] = DataConfig.from_dict(dict(d.get("data") or {}))
        return cls(**kw)


# --- export -----------------------------------------------------------------------------

EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
# Newest opset torch.onnx can emit (torch.onnx._constants.ONNX_MAX_OPSET in torch 2.10-2.14);
# the dynamo exporter authors at opset 18 and up-converts, checked to round-trip VGG16 on ORT.
DEFAULT_OPSET = 23
# The dynamo exporter's own opset (torchlib); older opsets need a lossy down-conversion.
MIN_DYNAMO_OPSET = 18
# The TorchScript-based exporter stops at opset 20 (ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET).
MAX_LEGACY_OPSET = 20


@dataclass(frozen=True)
class TritonConfig:
    """Settings of ``tlx export --format triton`` (a Triton model repository in RUN/triton).

    Attributes:
        model_name: the model's folder and name on the server.
        device: the target: which verify verdict chooses the artifact, and the instance kind
            of the default ``config.pbtxt`` (``configs/cpu.pbtxt`` and ``configs/gpu.pbtxt``
            are written either way).
        variant: ship this variant or artifact instead of the default choice.
        max_batch_size: the largest batch dynamic batching forms.
        max_queue_delay_us: how long a request may wait for others to join its batch.
        instances: model instances (per GPU, or on the CPU).
    """

    model_name: str = "vgg16"
    device: str = "cpu"
    variant: str | None = None
    max_batch_size: int = 32
    max_queue_delay_us: int = 100
    instances: int = 1


@dataclass(frozen=True)
class ExportConfig:
    """Settings of ``tlx export``.

    Attributes:
        formats: any of ``onnx``, ``torchscript``, ``pt2``.
        opset: ONNX opset (``None``: :data:`DEFAULT_OPSET`, or 20 for the legacy exporter).
        batch_size: the largest batch the artifact is checked at (and the fixed batch with
            ``static_batch``).
        static_batch: export a fixed batch of ``batch_size`` instead of a dynamic one.
        precision: ``fp32``; ``fp16`` writes ``model.fp16.onnx`` (fp32 inputs/outputs) instead
            of ``model.onnx``. TorchScript and .pt2 are always fp32.
        exporter: ``dynamo`` (``torch.onnx.export(dynamo=True)``) or ``legacy``.
        force: overwrite existing artifact files.
        seed: seed of the random check inputs.
        triton: settings of the ``triton`` format (not part of ``all``: it ships an artifact
            the other formats and ``tlx optimize`` made).
    """

    formats: tuple[str, ...] = EXPORT_FORMATS
    opset: int | None = None
    batch_size: int = 8
    static_batch: bool = False
    precision: str = "fp32"
    exporter: str = "dynamo"
    force: bool = False
    seed: int = 0
    triton: TritonConfig = field(default_factory=TritonConfig)


# --- verify -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyConfig:
    """Settings of ``tlx verify`` (parity of every artifact against the eager reference).

    Attributes:
        runtimes: runtime names, or ``("all",)`` for every registered runtime that can run
            here (unavailable ones are then skipped with the reason instead of failing).
        device: ``cpu`` or ``cuda``; the reference always runs in fp32 on the CPU.
        samples: held-out validation images (0 = random inputs only).
        batch_sizes: batch sizes of the seeded random inputs (1, an odd one, the largest).
        seed: seed of the random inputs.
        atol: override of the profile's absolute tolerance on logits (None = profile).
        rtol: override of the profile's relative tolerance (None = profile).
        min_top1: override of the profile's minimum top-1 agreement in [0, 1] (None = profile).
        localize: on failure, find the first layer whose activation diverges.
        threads: intra-op threads for the runtimes (None = library default).
    """

    runtimes: tuple[str, ...] = ("all",)
    device: str = "cpu"
    # 256 held-out images: enough that one flip (0.39 points) stays inside the int8
    # profile's 0.5-point accuracy limit; the same count `tlx optimize` gates on.
    samples: int = 256
    batch_sizes: tuple[int, ...] = (1, 3, 8)
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    min_top1: float | None = None
    localize: bool = False
    threads: int | None = None


# --- bench ------------------------------------------------------------------------------

BENCH_ALL = "all"
BENCH_DEVICES = ("cpu", "cuda")
BENCH_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class BenchConfig:
    """Settings of ``tlx bench`` (validated on construction; messages name the CLI option).

    Attributes:
        runtimes: registry names, or ``("all",)`` for every runtime that can run here
            (unavailable ones are then skipped with a reason instead of failing).
        device: ``cpu`` or ``cuda``.
        batch_sizes: batch sizes to time, each a separate cell per runtime.
        precision: ``fp32``, ``fp16`` or ``bf16`` (bf16 is slow on CPUs without AMX).
        warmup: untimed iterations per runtime × batch before timing.
        iters: timed iterations per runtime × batch (ignored when ``min_time_s`` is set).
        min_time_s: time each runtime × batch for at least this many seconds instead.
        iters_per_round: timed iterations per cell per round; rounds interleave the cells so
            that machine drift hits every runtime alike.
        threads: CPU threads for torch and ONNX Runtime; None keeps torch's default (recorded).
        seed: seed of the random input batches shared by every runtime.
        reference_runtime: the runtime speed-ups are computed against.
        compare: a baseline ``bench.json`` to gate against.
        max_regression_pct: allowed p50 slow-down versus the baseline, in percent.
        out_dir: where bench.json/.md/.csv/.png go; None = the run folder.
        tf32: on CUDA, let fp32 matmuls/convolutions use TF32 (rows then say ``tf32``);
            False times IEEE fp32.
    """

    runtimes: tuple[str, ...] = (BENCH_ALL,)
    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    precision: str = "fp32"
    warmup: int = 5
    iters: int = 50
    min_time_s: float | None = None
    iters_per_round: int = 5
    threads: int | None = None
    seed: int = 0
    reference_runtime: str = "eager"
    compare: str | None = None
    max_regression_pct: float = 10.0
    out_dir: str | None = None
    tf32: bool = False

    def __post_init__(self) -> None:
        from exporter.core.errors import UsageError

        if not self.runtimes or any(not r.strip() for r in self.runtimes):
            raise UsageError("--runtimes: give a comma-separated list of runtimes, or 'all'")
        if self.device not in BENCH_DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(BENCH_DEVICES)}")
        if self.precision not in BENCH_PRECISIONS:
            raise UsageError(
                f"--precision {self.precision!r}: choose one of {', '.join(BENCH_PRECISIONS)}"
            )
        if not self.batch_sizes or any(not 1 <= int(b) <= MAX_BATCH_SIZE for b in self.batch_sizes):
            raise UsageError(
                f"--batch-sizes: give integers from 1 to {MAX_BATCH_SIZE}, e.g. 1,8,32"
            )
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise UsageError("--batch-sizes: each batch size may appear only once")
        if self.warmup < 0:
            raise UsageError(f"--warmup {self.warmup}: must be >= 0")
        if self.iters < 2:
            raise UsageError(f"--iters {self.iters}: need at least 2 timed iterations")
        if self.min_time_s is not None and self.min_time_s <= 0:
            raise UsageError(f"--min-time {self.min_time_s}: must be > 0 seconds")
        if self.iters_per_round < 1:
            raise UsageError(f"iters_per_round {self.iters_per_round}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        if self.max_regression_pct < 0:
            raise UsageError(f"--max-regression {self.max_regression_pct}: must be >= 0 percent")

    @property
    def all_runtimes(self) -> bool:
        """True when the user asked for every runtime (unavailable ones are then skipped)."""
        return BENCH_ALL in self.runtimes


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``tlx demo``: train → export → verify → bench, offline, in minutes on a CPU.

    Attributes:
        out_dir: the run folder the demo creates (None = artifacts/demo-<UTC time>).
        weights: ``none`` (random init) or a local VGG16 state dict.
        image_size: input size; 32 px keeps the whole demo under three minutes on 2 cores.
        train_size: synthetic training images.
        val_size: synthetic validation images.
        epochs: training epochs of the head (on cached trunk features: cheap at 32 px); every
            other training setting is ``tlx train``'s default.
        batch_sizes: bench batch sizes.
        warmup: bench warm-up iterations per cell.
        iters: bench timed iterations per cell.
        seed: seed of data, init and bench inputs.
        formats: export formats (all three by default).
        variants: ``tlx optimize`` variants built after export (empty: none). ``fold`` and
            ``fold-int8`` (the fastest CPU artifact): plain ``int8`` added ~25 s of optimize
            and verify and took the demo past 3 minutes on 2 cores (185 s measured).
        verify_samples: held-out images verify compares on (at most ``val_size``): 256, so
            that one int8 disagreement (0.39 points) stays inside the int8 profile.
        runtimes: runtimes verified and benched (``all``: whatever runs here).
    """

    out_dir: str | None = None
    weights: str = "none"
    image_size: int = 32
    train_size: int = 400
    val_size: int = 256
    epochs: int = 12
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 1
    iters: int = 8
    seed: int = 0
    formats: tuple[str, ...] = ("onnx", "torchscript", "pt2")
    variants: tuple[str, ...] = ("fold", "fold-int8")
    verify_samples: int = 256
    runtimes: tuple[str, ...] = (BENCH_ALL,)


# --- serve and load test -----------------------------------------------------------------

SERVE_DEVICES = ("cpu", "cuda")
# Triton's own default ports (HTTP, gRPC, metrics), so clients configured for Triton just work.
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_MODEL_NAME = "vgg16"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``tlx serve`` (validated on construction; messages name the CLI option).

    Attributes:
        variant: the artifact variant to serve (None: the run's recommended one).
        runtime: the runtime that runs it (None: chosen with the artifact).
        device: ``cpu`` or ``cuda``.
        host: the address every endpoint binds to; loopback unless asked otherwise.
        http_port / grpc_port / metrics_port: the KServe v2 HTTP and gRPC ports, Prometheus.
        model_name: the name clients address the model by.
        max_batch: largest batch the dynamic batcher forms (and a request may carry).
        max_queue_delay_us: how long a request may wait for others to fill a batch.
        instances: model instances, each with its own session, run in parallel.
        threads: intra-op threads of each instance's runtime (None: the runtime's default).
        drain_timeout_s: on SIGINT/SIGTERM, how long in-flight requests may take to finish.
    """

    variant: str | None = None
    runtime: str | None = None
    device: str = "cpu"
    host: str = LOOPBACK
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    model_name: str = DEFAULT_MODEL_NAME
    max_batch: int = 64
    max_queue_delay_us: int = 1000
    instances: int = 1
    threads: int | None = None
    drain_timeout_s: int = 30

    def __post_init__(self) -> None:
        import re

        from exporter.core.errors import UsageError

        if self.device not in SERVE_DEVICES and not self.device.startswith("cuda:"):
            raise UsageError(f"--device {self.device!r}: choose cpu or cuda")
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port}
        ports["--metrics-port"] = self.metrics_port
        for flag, port in ports.items():
            if not 1 <= int(port) <= 65535:
                raise UsageError(f"{flag} {port}: give a port from 1 to 65535")
        if len(set(ports.values())) != len(ports):
            raise UsageError(f"{', '.join(ports)} must differ, got {list(ports.values())}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.model_name):
            raise UsageError(
                f"--model-name {self.model_name!r}: use letters, digits, '.', '_' or '-'"
            )
        if not 1 <= self.max_batch <= MAX_BATCH_SIZE:
            raise UsageError(f"--max-batch {self.max_batch}: give 1 to {MAX_BATCH_SIZE}")
        if not 0 <= self.max_queue_delay_us <= 10_000_000:
            raise UsageError(
                f"--max-queue-delay-us {self.max_queue_delay_us}: give 0 to 10000000 (10 s)"
            )
        if not 1 <= self.instances <= 64:
            raise UsageError(f"--instances {self.instances}: give 1 to 64")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        if self.drain_timeout_s < 1:
            raise UsageError(f"--drain-timeout {self.drain_timeout_s}: must be >= 1 second")


@dataclass(frozen=True)
class LoadtestConfig:
    """Settings of ``tlx loadtest`` / ``tlx bench --server`` (a closed-loop concurrency sweep).

    A level counts when ``stable_windows`` consecutive windows agree within
    ``stability_pct`` percent in throughput and mean latency (perf_analyzer's rule); a level
    that does not settle within ``max_windows`` (or the request/time bounds) is reported as
    unstable over its last windows.

    Attributes:
        server: the server's HTTP URL, e.g. ``http://127.0.0.1:8000``.
        model_name: the served model's name.
        concurrency: the closed-loop levels: this many requests in flight at all times.
        request_batch: images per request (the server's batcher combines requests).
        window_s: length of one measurement window.
        stable_windows: how many consecutive windows must agree.
        stability_pct: how far (max/min - 1, in percent) they may differ.
        max_windows: windows per level before it is reported as unstable.
        warmup_s: untimed requests at the start of every level.
        max_requests: requests per level, at most.
        max_time_s: the whole sweep's time bound; levels not reached are listed as skipped.
        allow_remote: permit a server that is not on this machine's loopback interface.
        seed: seed of the random input images.
        out_dir: where loadtest.json/.md/.csv/.png go; None = the run folder.
    """

    server: str = f"http://{LOOPBACK}:{DEFAULT_HTTP_PORT}"
    model_name: str = DEFAULT_MODEL_NAME
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    request_batch: int = 1
    window_s: float = 2.0
    stable_windows: int = 3
    stability_pct: float = 10.0
    max_windows: int = 10
    warmup_s: float = 1.0
    max_requests: int = 100_000
    max_time_s: float = 600.0
    allow_remote: bool = False
    seed: int = 0
    out_dir: str | None = None

    def __post_init__(self) -> None:
        from exporter.core.errors import UsageError

        if not self.concurrency or any(not 1 <= int(c) <= 1024 for c in self.concurrency):
            raise UsageError("--concurrency: give integers from 1 to 1024, e.g. 1,2,4,8,16")
        if len(set(self.concurrency)) != len(self.concurrency):
            raise UsageError("--concurrency: each level may appear only once")
        if not 1 <= self.request_batch <= MAX_BATCH_SIZE:
            raise UsageError(f"--request-batch {self.request_batch}: give 1 to {MAX_BATCH_SIZE}")
        if not self.window_s > 0:
            raise UsageError(f"--window {self.window_s}: must be > 0 seconds")
        if self.stable_windows < 1:
            raise UsageError(f"stable_windows {self.stable_windows}: must be >= 1")
        if not self.stability_pct > 0:
            raise UsageError(f"--stability {self.stability_pct}: must be > 0 percent")
        if self.max_windows < self.stable_windows:
            raise UsageError(
                f"--max-windows {self.max_windows}: must be >= {self.stable_windows} "
                "(the windows that must agree)"
            )
        if self.warmup_s < 0:
            raise UsageError(f"--warmup {self.warmup_s}: must be >= 0 seconds")
        if self.max_requests < 1:
            raise UsageError(f"--max-requests {self.max_requests}: must be >= 1")
        if not self.max_time_s > 0:
            raise UsageError(f"--max-time {self.max_time_s}: must be > 0 seconds")


# --- optimize ---------------------------------------------------------------------------

OPTIMIZE_VARIANTS = ("fold", "int8", "int8-dynamic", "fold-int8", "fp16")
# The fast variants worth shipping by default (dynamic int8 is slower at batch 64:
# benchmarks/RESULTS.md, "tlx optimize").
DEFAULT_OPTIMIZE_VARIANTS = ("fold", "int8", "fold-int8")


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of ``tlx optimize`` (validated on construction; messages name the CLI option).

    Attributes:
        variants: any of ``fold``, ``int8``, ``int8-dynamic``, ``fold-int8``, ``fp16``.
        calib_samples: training images that calibrate static int8 activation ranges.
        eval_samples: held-out validation images for the gate of every variant.
        min_top1_agreement: int8/fp16 gate: top-1 agreement with eager fp32, in [0, 1]
            (the exact fp32 fold keeps verify's fp32 profile: 100% and atol 1e-4).
        max_accuracy_drop_points: gate: allowed accuracy loss versus eager, in points.
        force: overwrite variants that already exist.
        seed: chooses the calibration and evaluation images.
    """

    variants: tuple[str, ...] = DEFAULT_OPTIMIZE_VARIANTS
    calib_samples: int = 32
    eval_samples: int = 256
    min_top1_agreement: float = 0.99
    max_accuracy_drop_points: float = 0.5
    force: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        from exporter.core.errors import UsageError

        unknown = [v for v in self.variants if v not in OPTIMIZE_VARIANTS]
        if not self.variants or unknown:
            raise UsageError(
                f"--variants {','.join(self.variants)!r}: choose from "
                f"{', '.join(OPTIMIZE_VARIANTS)}"
            )
        if len(set(self.variants)) != len(self.variants):
            raise UsageError("--variants: each variant may appear only once")
        if self.calib_samples < 1:
            raise UsageError(f"--calib-samples {self.calib_samples}: must be >= 1")
        if self.eval_samples < 1:
            raise UsageError(f"--eval-samples {self.eval_samples}: must be >= 1")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise UsageError(f"--min-top1 {self.min_top1_agreement}: must be in [0, 1]")
        if self.max_accuracy_drop_points < 0:
            raise UsageError(f"--max-accuracy-drop {self.max_accuracy_drop_points}: must be >= 0")


# --- predict ----------------------------------------------------------------------------

PREDICT_OUTPUTS = ("table", "json", "csv")


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
        threads: runtime intra-op threads (None: the runtime's default).
    """

    runtime: str | None = None
    variant: str | None = None
    device: str = "cpu"
    top_k: int = 5
    batch_size: int = 32
    output: str = "table"
    skip_bad: bool = False
    threads: int | None = None

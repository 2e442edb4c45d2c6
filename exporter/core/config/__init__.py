"""Frozen dataclasses for each command's settings: the single source of defaults.

Each field that is a command-line option declares it with ``opt`` (name, default, help,
choices), from which ``exporter/cli/options.py`` builds the CLI; the library takes these
objects. One module per
stage; every public name is re-exported here, so ``from exporter.core.config import X`` is the
import to use. Each dataclass checks its own values in ``__post_init__`` (ARCHITECTURE.md,
"Settings and checks"); the words for devices, precisions and ``all`` are in
``exporter/core/choices.py``.
"""

from exporter.core.config.bench import BenchConfig
from exporter.core.config.common import (
    DEFAULT_ARTIFACTS_DIR,
    MAX_BATCH_SIZE,
    check_int,
    to_dict,
)
from exporter.core.config.demo import DemoConfig
from exporter.core.config.export import (
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    EXPORTER_CHOICES,
    KSERVE,
    MAX_LEGACY_OPSET,
    MIN_DYNAMO_OPSET,
    STORAGE_SCHEMES,
    TRITON,
    ExportConfig,
    KServeConfig,
    parse_formats,
)
from exporter.core.config.optimize import (
    AUTO_PRUNE_RATIOS,
    DEFAULT_OPTIMIZE_VARIANTS,
    OPTIMIZE_VARIANTS,
    PRUNE_AUTO,
    PRUNED_VARIANTS,
    OptimizeConfig,
)
from exporter.core.config.predict import (
    MAX_BATCH,
    MAX_TOP_K,
    PREDICT_OUTPUTS,
    PredictConfig,
)
from exporter.core.config.serve import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_MODEL_NAME,
    LOOPBACK,
    MAX_INSTANCES,
    MAX_QUEUE_DELAY_US,
    MODEL_NAME_RE,
    LoadtestConfig,
    ServeConfig,
    TritonConfig,
)
from exporter.core.config.train import (
    AUGMENT_MIN_SIZE,
    AUGMENT_MODES,
    CACHE_MODES,
    DATA_SOURCES,
    DEFAULT_WARMUP_FRACTION,
    FINETUNE_HEAD_SHARE,
    LR_AUTO,
    OPTIMIZERS,
    RECIPES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_TRAIN_SIZE,
    SYNTHETIC_VAL_SIZE,
    DataConfig,
    LaunchSpec,
    TrainConfig,
)
from exporter.core.config.tune import TuneConfig
from exporter.core.config.verify import (
    VerifyConfig,
    check_tolerance_overrides,
)
from exporter.core.resources import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
)

__all__ = [
    "AUGMENT_MIN_SIZE",
    "AUGMENT_MODES",
    "AUTO_PRUNE_RATIOS",
    "CACHE_MODES",
    "DATA_SOURCES",
    "DEFAULT_ARTIFACTS_DIR",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_OPSET",
    "DEFAULT_OPTIMIZE_VARIANTS",
    "DEFAULT_WARMUP_FRACTION",
    "EXPORTER_CHOICES",
    "EXPORT_FORMATS",
    "FINETUNE_HEAD_SHARE",
    "KSERVE",
    "LOOPBACK",
    "LR_AUTO",
    "MAX_BATCH",
    "MAX_BATCH_SIZE",
    "MAX_IMAGE_SIZE",
    "MAX_INSTANCES",
    "MAX_LEGACY_OPSET",
    "MAX_QUEUE_DELAY_US",
    "MAX_TOP_K",
    "MIN_DYNAMO_OPSET",
    "MIN_IMAGE_SIZE",
    "MODEL_NAME_RE",
    "OPTIMIZERS",
    "OPTIMIZE_VARIANTS",
    "PREDICT_OUTPUTS",
    "PRUNED_VARIANTS",
    "PRUNE_AUTO",
    "RECIPES",
    "STORAGE_SCHEMES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_TRAIN_SIZE",
    "SYNTHETIC_VAL_SIZE",
    "TRITON",
    "BenchConfig",
    "DataConfig",
    "DemoConfig",
    "ExportConfig",
    "KServeConfig",
    "LaunchSpec",
    "LoadtestConfig",
    "OptimizeConfig",
    "PredictConfig",
    "ServeConfig",
    "TrainConfig",
    "TritonConfig",
    "TuneConfig",
    "VerifyConfig",
    "check_int",
    "check_tolerance_overrides",
    "parse_formats",
    "to_dict",
]

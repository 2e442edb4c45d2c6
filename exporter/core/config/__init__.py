"""Frozen dataclasses for each command's settings: the single source of defaults.

The CLI reads its option defaults from here; the library takes these objects. One module per
stage; every public name is re-exported here, so ``from exporter.core.config import X`` is the
import to use.
"""

from exporter.core.config.bench import BENCH_ALL, BENCH_DEVICES, BENCH_PRECISIONS, BenchConfig
from exporter.core.config.common import DEFAULT_ARTIFACTS_DIR, MAX_BATCH_SIZE, to_dict
from exporter.core.config.demo import DemoConfig
from exporter.core.config.export import (
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    MAX_LEGACY_OPSET,
    MIN_DYNAMO_OPSET,
    ExportConfig,
    TritonConfig,
)
from exporter.core.config.optimize import (
    DEFAULT_OPTIMIZE_VARIANTS,
    OPTIMIZE_VARIANTS,
    OptimizeConfig,
)
from exporter.core.config.predict import PREDICT_OUTPUTS, PredictConfig
from exporter.core.config.serve import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_MODEL_NAME,
    LOOPBACK,
    SERVE_DEVICES,
    LoadtestConfig,
    ServeConfig,
)
from exporter.core.config.train import (
    AUGMENT_MIN_SIZE,
    AUGMENT_MODES,
    DATA_SOURCES,
    DEFAULT_WARMUP_FRACTION,
    FINETUNE_HEAD_SHARE,
    LR_AUTO,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    RECIPES,
    SYNTHETIC_TRAIN_SIZE,
    SYNTHETIC_VAL_SIZE,
    DataConfig,
    TrainConfig,
)
from exporter.core.config.verify import VerifyConfig

__all__ = [
    "AUGMENT_MIN_SIZE",
    "AUGMENT_MODES",
    "BENCH_ALL",
    "BENCH_DEVICES",
    "BENCH_PRECISIONS",
    "DATA_SOURCES",
    "DEFAULT_ARTIFACTS_DIR",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_OPSET",
    "DEFAULT_OPTIMIZE_VARIANTS",
    "DEFAULT_WARMUP_FRACTION",
    "EXPORT_FORMATS",
    "FINETUNE_HEAD_SHARE",
    "LOOPBACK",
    "LR_AUTO",
    "MAX_BATCH_SIZE",
    "MAX_IMAGE_SIZE",
    "MAX_LEGACY_OPSET",
    "MIN_DYNAMO_OPSET",
    "MIN_IMAGE_SIZE",
    "OPTIMIZE_VARIANTS",
    "PREDICT_OUTPUTS",
    "RECIPES",
    "SERVE_DEVICES",
    "SYNTHETIC_TRAIN_SIZE",
    "SYNTHETIC_VAL_SIZE",
    "BenchConfig",
    "DataConfig",
    "DemoConfig",
    "ExportConfig",
    "LoadtestConfig",
    "OptimizeConfig",
    "PredictConfig",
    "ServeConfig",
    "TrainConfig",
    "TritonConfig",
    "VerifyConfig",
    "to_dict",
]

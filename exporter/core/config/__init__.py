"""Frozen dataclasses for each command's settings: the single source of defaults.

Each field that is a command-line option declares it with ``opt`` (name, default, help,
choices), from which ``exporter/cli/options.py`` builds the CLI; the library takes these
objects. One module per stage; the names other modules use are re-exported here, so
``from exporter.core.config import X`` is the import to use. Each dataclass checks its own
values in ``__post_init__`` (ARCHITECTURE.md, "Settings and checks"); the words for devices,
precisions and ``all`` are in ``exporter/core/choices.py``.
"""

from exporter.core.config.bench import BenchConfig
from exporter.core.config.common import (
    DEFAULT_ARTIFACTS_DIR,
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
    TRITON,
    ExportConfig,
    InspectConfig,
    KServeConfig,
    parse_formats,
)
from exporter.core.config.optimize import (
    PRUNE_AUTO,
    PRUNED_VARIANTS,
    OptimizeConfig,
)
from exporter.core.config.predict import (
    MAX_BATCH,
    MAX_TOP_K,
    EngineConfig,
    PredictConfig,
)
from exporter.core.config.serve import (
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
    DataConfig,
    LaunchSpec,
    TrainConfig,
)
from exporter.core.config.tune import TuneConfig
from exporter.core.config.verify import (
    VerifyConfig,
    VerifyTarget,
    check_tolerance_overrides,
)

__all__ = [
    "AUGMENT_MIN_SIZE",
    "AUGMENT_MODES",
    "CACHE_MODES",
    "DATA_SOURCES",
    "DEFAULT_ARTIFACTS_DIR",
    "DEFAULT_OPSET",
    "DEFAULT_WARMUP_FRACTION",
    "EXPORTER_CHOICES",
    "EXPORT_FORMATS",
    "FINETUNE_HEAD_SHARE",
    "KSERVE",
    "LR_AUTO",
    "MAX_BATCH",
    "MAX_LEGACY_OPSET",
    "MAX_TOP_K",
    "MIN_DYNAMO_OPSET",
    "OPTIMIZERS",
    "PRUNED_VARIANTS",
    "PRUNE_AUTO",
    "RECIPES",
    "SYNTHETIC_CLASSES",
    "TRITON",
    "BenchConfig",
    "DataConfig",
    "DemoConfig",
    "EngineConfig",
    "ExportConfig",
    "InspectConfig",
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
    "VerifyTarget",
    "check_int",
    "check_tolerance_overrides",
    "parse_formats",
    "to_dict",
]

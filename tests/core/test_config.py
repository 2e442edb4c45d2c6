"""Settings check their own values on construction; each vocabulary is declared once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from exporter.core import choices
from exporter.core.config import (
    EXPORT_FORMATS,
    TRITON,
    BenchConfig,
    DataConfig,
    ExportConfig,
    PredictConfig,
    ServeConfig,
    TrainConfig,
    TritonConfig,
    VerifyConfig,
    to_dict,
)
from exporter.core.errors import UsageError

BAD_VALUES: list[tuple[type, dict[str, Any], str]] = [
    (DataConfig, {"source": "mnist"}, "--data 'mnist'"),
    (DataConfig, {"source": "imagefolder"}, "needs --data-dir"),
    (DataConfig, {"image_size": 31}, "--image-size 31"),
    (DataConfig, {"source": "synthetic", "val_size": 0}, "--val-size"),
    (DataConfig, {"limit_train": 0}, "--limit-train"),
    (DataConfig, {"augment": "sometimes"}, "--augment"),
    (TrainConfig, {"epochs": 0}, "--epochs"),
    (TrainConfig, {"lr": float("nan")}, "--lr"),
    (TrainConfig, {"device": "tpu"}, "--device"),
    (TrainConfig, {"freeze_epochs": 2}, "--freeze-epochs applies to --recipe finetune"),
    # --unfreeze-from is checked against VGG16's layout when training starts:
    # tests/model/test_vgg.py, test_a_bad_unfreeze_from_stops_training_before_it_writes.
    (ExportConfig, {"formats": ("tflite",)}, "--format 'tflite'"),
    (ExportConfig, {"precision": "bf16"}, "--precision 'bf16'"),
    (ExportConfig, {"formats": ("pt2",), "precision": "fp16"}, "fp16 applies to ONNX only"),
    (ExportConfig, {"exporter": "tvm"}, "--exporter"),
    (TritonConfig, {"model_name": "../up"}, "--model-name"),
    (TritonConfig, {"device": "cuda:x"}, "--device 'cuda:x'"),
    (TritonConfig, {"instances": 0}, "--instances 0"),
    (ServeConfig, {"model_name": "../up"}, "--model-name"),  # the same rule as the repository
    (ServeConfig, {"device": "cuda:x"}, "--device 'cuda:x'"),
    (VerifyConfig, {"samples": -1}, "--samples"),
    (VerifyConfig, {"batch_sizes": ()}, "--batch-sizes"),
    (VerifyConfig, {"atol": float("inf")}, "--atol"),
    (VerifyConfig, {"min_top1": 1.5}, "--min-top1"),
    (PredictConfig, {"top_k": 0}, "--top-k 0"),
    (PredictConfig, {"output": "xml"}, "--format 'xml'"),
    (PredictConfig, {"device": "tpu"}, "--device 'tpu'"),
    (BenchConfig, {"precision": "int8"}, "--precision 'int8'"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD_VALUES)
def test_a_bad_value_fails_where_the_config_is_built(
    cls: type, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        cls(**kwargs)


def test_defaults_are_valid_and_replace_checks_again() -> None:
    for cls in (DataConfig, TrainConfig, ExportConfig, TritonConfig, VerifyConfig, PredictConfig):
        cls()
    with pytest.raises(UsageError, match="--epochs"):
        replace(TrainConfig(), epochs=0)


def test_serve_and_the_triton_repository_share_one_model_config() -> None:
    from dataclasses import fields

    shared = [f.name for f in fields(TritonConfig)]
    assert shared == [f.name for f in fields(ServeConfig)][: len(shared)]
    assert {k: getattr(ServeConfig(), k) for k in shared} == to_dict(TritonConfig())
    # The measured batcher (benchmarks/RESULTS.md, serve_bench; tlx tune's baseline).
    assert (TritonConfig().max_batch, TritonConfig().max_queue_delay_us) == (64, 1000)


def test_train_json_round_trip_and_a_tampered_one_is_refused() -> None:
    cfg = TrainConfig(data=DataConfig(source="synthetic", image_size=32), recipe="finetune")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    saved = cfg.to_dict()
    saved["data"]["image_size"] = 4
    with pytest.raises(UsageError, match="--image-size 4"):
        TrainConfig.from_dict(saved)


def test_export_formats_are_normalised_on_construction() -> None:
    assert ExportConfig(formats=("all",)).formats == EXPORT_FORMATS
    assert ExportConfig(formats=("triton", "pt2", "onnx")).formats == ("onnx", "pt2", TRITON)
    assert ExportConfig(formats="torchscript,onnx").formats == ("onnx", "torchscript")  # type: ignore[arg-type]


def test_every_runtime_declares_devices_from_the_one_list() -> None:
    from exporter.runtimes import load_all

    for cls in load_all().values():
        assert set(cls.devices) <= set(choices.DEVICES), cls.name


def test_the_export_registry_follows_the_declared_formats() -> None:
    from exporter.export.export import EXPORTERS

    assert tuple(EXPORTERS) == EXPORT_FORMATS

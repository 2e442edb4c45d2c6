"""Training on a CUDA device (``pytest -m gpu``): the trunk partly unfrozen and uncached,
deterministic, AMP by compute capability, and a CPU checkpoint resumed on the GPU."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from exporter.core.config import DataConfig, TrainConfig
from exporter.train import fit, resume_config

pytestmark = pytest.mark.gpu


def tiny(out: Path, *, image_size: int = 32, **kw: object) -> TrainConfig:
    data = DataConfig(
        source="synthetic", train_size=16, val_size=8, image_size=image_size, augment=False
    )
    base = TrainConfig(data=data, weights="none", epochs=1, batch_size=8, lr=0.01, out=str(out))
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("image_size", [32, 224])
def test_deterministic_unfrozen_uncached_amp_training(tmp_path: Path, image_size: int) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    cfg = tiny(
        tmp_path / "run",
        image_size=image_size,
        epochs=2,
        unfreeze_at=2,
        unfreeze_from="features.24",
        cache_features="off",
        deterministic=True,
        device="cuda",
        amp=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = fit(cfg).record
    assert record["status"] == "completed"
    assert [e["phase"] for e in record["epochs"]] == [1, 2]
    assert not any(e["feature_cache"] for e in record["epochs"]) and record["unfrozen_params"]
    native = torch.cuda.get_device_capability()[0] >= 8
    assert record["amp_dtype"] == ("bfloat16" if native else "float16")
    pool_warnings = [w for w in caught if "adaptive_avg_pool2d" in str(w.message)]
    if image_size == 224:
        assert not pool_warnings  # 7x7 maps: the pool is skipped, nothing nondeterministic
    assert torch.are_deterministic_algorithms_enabled() is before  # restored


def test_cpu_checkpoint_resumes_on_cuda_with_fp16_scaler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporter.runtimes.cuda_math as cuda_math

    run = tmp_path / "run"
    fit(tiny(run, device="cpu", cache_features="off"))
    # Force the fp16 + GradScaler path (an H200 has native bf16): the CPU run saved a
    # disabled scaler's empty state, which an enabled scaler must not try to load.
    monkeypatch.setattr(cuda_math, "native_bf16", lambda *_a, **_k: False)
    cfg = replace(resume_config(run), device="cuda", epochs=2, amp=True)
    record = fit(cfg, resume=True).record
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["amp_dtype"] == "float16"
    assert record["environment"]["device"].startswith("cuda")

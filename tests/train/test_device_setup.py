"""CUDA's special cases of the training loop, checked on the CPU where the logic allows:
determinism flags restored, the AMP dtype by compute capability, the 7x7 pool skip, the
epoch sampler behind persistent workers, and resume state across devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from exporter.cli import app
from exporter.core.config import DataConfig, TrainConfig
from exporter.core.errors import EXIT_USAGE, UsageError
from exporter.runtimes import cuda_math
from exporter.train.batches import EpochBatches
from exporter.train.checkpoint import restore_cuda_rng, restore_scaler
from exporter.train.device_setup import amp_dtype, determinism, pool
from exporter.train.modules import HeadPath


def _flags() -> tuple[bool, bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_determinism_sets_then_restores_global_flags(device_type: str) -> None:
    before = _flags()
    with determinism(True, device_type) as state:
        assert torch.are_deterministic_algorithms_enabled()
        # CUDA: adaptive_avg_pool2d's backward has no deterministic kernel -> warn, not raise.
        assert torch.is_deterministic_algorithms_warn_only_enabled() is (device_type == "cuda")
        assert state == {"deterministic": True, "warn_only": device_type == "cuda"}
        assert torch.backends.cudnn.benchmark is False
    assert _flags() == before


def test_determinism_restores_after_an_error_and_benchmark_only_on_cuda() -> None:
    before = _flags()
    with pytest.raises(RuntimeError, match="boom"), determinism(True, "cuda"):
        raise RuntimeError("boom")
    assert _flags() == before
    with determinism(False, "cuda"):
        assert torch.backends.cudnn.benchmark is True
    with determinism(False, "cpu"):
        assert torch.backends.cudnn.benchmark is before[2]
    assert _flags() == before


@pytest.mark.parametrize(
    ("capability", "expected"), [((7, 5), torch.float16), ((8, 0), torch.bfloat16)]
)
def test_amp_dtype_needs_native_bf16(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: torch.dtype
) -> None:
    # is_bf16_supported() is True on a T4 (emulated): compute capability must decide.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    assert cuda_math.native_bf16() is (capability[0] >= 8)
    assert amp_dtype("cuda", True) is expected
    assert amp_dtype("cuda", False) is None
    assert amp_dtype("cpu", True) is None


def test_pool_is_skipped_only_when_already_7x7(random_vgg16) -> None:
    model = random_vgg16().eval()
    f7 = torch.randn(2, 512, 7, 7)
    assert pool(model, f7) is f7  # the identity, without the op
    assert torch.equal(model.avgpool(f7), f7)  # ... which is what the op computes
    f1 = torch.randn(2, 512, 1, 1)
    assert pool(model, f1).shape == (2, 512, 7, 7)
    head = HeadPath(model)
    with torch.no_grad():
        want = model.classifier(torch.flatten(model.avgpool(f1), 1))
        assert torch.equal(head(f1), want)


def test_epoch_batches_feed_one_persistent_loader_across_epochs() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.arange(6))
    sampler = EpochBatches()
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=1, persistent_workers=True)
    seen = []
    for batches in ([[0, 1], [2, 3]], [[5, 4], [3]]):
        sampler.set(batches)
        seen.append([b[0].tolist() for b in loader])
    assert seen == [[[0, 1], [2, 3]], [[5, 4], [3]]]
    assert len(sampler) == 2


def test_restore_scaler_skips_an_empty_state() -> None:
    enabled = torch.amp.GradScaler("cpu", enabled=True)
    assert restore_scaler(enabled, {}) is False  # a CPU/bf16 run saved a disabled scaler
    other = torch.amp.GradScaler("cpu", init_scale=8.0, enabled=True)
    assert restore_scaler(enabled, other.state_dict()) is True
    assert enabled.get_scale() == 8.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert restore_scaler(disabled, other.state_dict()) is False


def test_cuda_rng_restored_onto_fewer_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: calls.append(index))
    saved = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    assert restore_cuda_rng(saved) == 1 and calls == [0]  # two saved, one GPU now
    assert restore_cuda_rng(None) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert restore_cuda_rng(saved) == 0  # a CUDA checkpoint resumed on a CPU machine


def test_resume_honours_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import exporter.train as train

    saved = TrainConfig(data=DataConfig(source="synthetic"), device="cuda", out=str(tmp_path))
    seen: list[Any] = []

    def fake_fit(cfg: TrainConfig, **_: Any) -> Any:
        seen.append(cfg)
        raise UsageError("stop here")  # the CLI's error path: exit 2, no training

    monkeypatch.setattr(train, "resume_config", lambda _run: saved)
    monkeypatch.setattr(train, "fit", fake_fit)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "--device", "cpu", "-q"])
    assert result.exit_code == EXIT_USAGE and seen[-1].device == "cpu"
    result = runner.invoke(app, ["train", "--resume", str(tmp_path), "-q"])
    assert seen[-1].device == "cuda"  # not given: the run's own device

"""Structured pruning keeps a dense VGG16-shaped model; distillation resumes after a signal."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from exporter.core.errors import InputFileError, Interrupted, UsageError
from exporter.model.shape import VGGShape
from exporter.optimize.distill import DistillSettings, distill, load_state
from exporter.optimize.prune import fc_keep_width, prune_vgg16


@pytest.fixture(scope="module")
def teacher(random_vgg16) -> torch.nn.Module:
    return random_vgg16(seed=0).eval()


@pytest.fixture(scope="module")
def student(teacher: torch.nn.Module) -> torch.nn.Module:
    return prune_vgg16(teacher, ratio=0.5, image_size=32)


def test_pruning_keeps_a_dense_vgg16_with_channels_in_multiples_of_8(teacher, student) -> None:
    shape = VGGShape.of(student)
    full = VGGShape.of(teacher)
    assert full == VGGShape.full(10)
    assert shape.num_classes == 10  # classifier[6]'s classes are never pruned
    assert shape.fc == (1024, 1024)  # 4096 · (1 - 0.5)²
    assert all(c % 8 == 0 for c in shape.conv)
    assert all(0.45 * f <= c <= 0.55 * f for c, f in zip(shape.conv, full.conv, strict=True))
    assert student.classifier[0].in_features == shape.conv[-1] * 49
    # The teacher is left untouched.
    assert VGGShape.of(teacher) == full
    # The same model at any input size (not folded): 32 and 64 px.
    with torch.no_grad():
        assert student(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert student(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_shape_macs_and_parameters_match_torch_pruning_counts(student) -> None:
    import torch_pruning as tp

    shape = VGGShape.of(student)
    macs, params = tp.utils.count_ops_and_params(student, torch.zeros(1, 3, 32, 32))
    assert shape.parameters() == params == sum(p.numel() for p in student.parameters())
    # torch-pruning also counts pooling and ReLU "ops"; convolutions and fc dominate.
    assert abs(shape.macs(32) - macs) / macs < 0.02
    assert VGGShape.full(10).macs(32) > 4 * shape.macs(32)


def test_a_shape_rebuilds_the_same_model_from_its_state_dict(student) -> None:
    shape = VGGShape.of(student)
    rebuilt = VGGShape.from_dict(shape.to_dict(), source="test").build()
    rebuilt.load_state_dict(student.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), student.eval()(x))


def test_a_bad_shape_record_names_its_file() -> None:
    with pytest.raises(InputFileError, match=r"state\.pt"):
        VGGShape.from_dict({"conv": [8] * 12, "fc": [8, 8], "num_classes": 2}, source="state.pt")
    with pytest.raises(InputFileError, match=r"state\.pt"):
        VGGShape.from_dict({"conv": "x"}, source="state.pt")


@pytest.mark.parametrize("ratio, width", [(0.5, 1024), (0.25, 2304), (0.75, 256), (0.99, 8)])
def test_fc_keeps_the_square_of_the_conv_fraction(ratio: float, width: int) -> None:
    assert fc_keep_width(ratio) == width


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_pruning_ratio_outside_0_1_is_refused(teacher, ratio: float) -> None:
    with pytest.raises(UsageError, match="--prune"):
        prune_vgg16(teacher, ratio=ratio, image_size=32)


# --- distillation ------------------------------------------------------------------------


def _tiny_student(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = VGGShape(conv=(8,) * 13, fc=(16, 16), num_classes=3).build()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def _data(n: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, 3, n)
    return images, labels, rng.standard_normal((n, 3)).astype(np.float32)


def _settings(**kw) -> DistillSettings:
    base = dict(epochs=2, lr=1e-3, batch=8, seed=0, ratio=0.5, teacher_sha256="t",
                images=24, image_size=32)  # fmt: skip
    return DistillSettings(**{**base, **kw})


def test_distillation_stopped_by_sigterm_resumes_to_the_same_weights(tmp_path) -> None:
    images, labels, soft = _data()
    kw = dict(images=images, labels=labels, soft_targets=soft, settings=_settings())
    straight, result = distill(_tiny_student(), folder=tmp_path / "a", resume=False, **kw)
    assert [h["epoch"] for h in result.history] == [1, 2]

    def stop_at_step_4(desc: str, done: int, total: int) -> None:
        if done == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    folder = tmp_path / "b"
    with pytest.raises(Interrupted, match="--resume") as stopped:
        distill(_tiny_student(), folder=folder, resume=False, progress=stop_at_step_4,
                resume_hint="tlx optimize RUN --prune 0.5 --resume", **kw)  # fmt: skip
    assert stopped.value.exit_code == 143
    assert (folder / "state.pt").is_file() and (folder / "meta.json").is_file()
    resumed, again = distill(None, folder=folder, resume=True, **kw)
    assert again.resumed_from == {"epoch": 1, "step": 1}  # 3 steps an epoch: stopped in epoch 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path) -> None:
    images, labels, soft = _data()
    kw = dict(images=images, labels=labels, soft_targets=soft)
    distill(_tiny_student(), settings=_settings(epochs=3), folder=tmp_path, resume=False, **kw)
    with pytest.raises(InputFileError, match=r"other settings \(epochs: 3 → 2\)"):
        load_state(tmp_path, _settings(epochs=2))
    with pytest.raises(InputFileError, match="no distillation checkpoint"):
        load_state(tmp_path / "missing", _settings())


def test_auto_search_rejections_fail_the_command_only_when_no_ratio_passed(tmp_path) -> None:
    from exporter.optimize.optimize import OptimizeResult
    from exporter.optimize.ship import VariantResult

    def v(status: str, ratio: float) -> VariantResult:
        return VariantResult("pruned", f"m{ratio}", status, "fp32", reason="dropped",
                             details={"search": "auto", "prune": {"ratio": ratio}})  # fmt: skip

    found = OptimizeResult(tmp_path, [v("rejected", 0.75), v("shipped", 0.6)], tmp_path, tmp_path)
    assert found.gate_failures == []
    none = OptimizeResult(tmp_path, [v("rejected", 0.75), v("rejected", 0.6)], tmp_path, tmp_path)
    assert len(none.gate_failures) == 2
    explicit = VariantResult("pruned", "m", "rejected", "fp32", reason="dropped")
    assert len(OptimizeResult(tmp_path, [explicit], tmp_path, tmp_path).gate_failures) == 1

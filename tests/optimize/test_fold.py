"""The pooling fold: exact where it applies, refused where it cannot be."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from exporter.core.errors import UsageError
from exporter.optimize.fold import fold_vgg16, plan_fold, pooling_matrix, trunk_output_hw


@pytest.fixture(scope="module")
def vgg(random_vgg16) -> nn.Module:
    return random_vgg16(seed=0).eval()


@settings(max_examples=40, deadline=None)
@given(
    in_h=st.integers(1, 20),
    in_w=st.integers(1, 20),
    out_h=st.integers(1, 9),
    out_w=st.integers(1, 9),
)
def test_pooling_matrix_is_adaptive_avg_pool(in_h: int, in_w: int, out_h: int, out_w: int) -> None:
    x = torch.randn(2, 3, in_h, in_w, dtype=torch.float64)
    expected = nn.AdaptiveAvgPool2d((out_h, out_w))(x).flatten(2)
    got = x.flatten(2) @ pooling_matrix((in_h, in_w), (out_h, out_w)).T
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("size", "trunk"), [(32, (1, 1)), (48, (1, 1)), (64, (2, 2)), (96, (3, 3)), (224, (7, 7))]
)
def test_trunk_output_size_matches_the_real_trunk(vgg: nn.Module, size: int, trunk: tuple) -> None:
    assert trunk_output_hw(vgg.features, (size, size)) == trunk
    if size <= 64:  # the real forward for the cheap sizes
        with torch.no_grad():
            assert tuple(vgg.features(torch.zeros(1, 3, size, size)).shape[2:]) == trunk


@pytest.mark.parametrize("size", [32, 64, 224])
def test_fold_is_exact(vgg: nn.Module, size: int) -> None:
    folded = fold_vgg16(vgg, size)
    x = torch.randn(
        2 if size < 224 else 1, 3, size, size, generator=torch.Generator().manual_seed(size)
    )
    with torch.no_grad():
        ref, got = vgg(x), folded(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-5
    assert torch.equal(got.argmax(1), ref.argmax(1))


def test_fold_parameter_counts_match_pitfalls(vgg: nn.Module) -> None:
    folded = fold_vgg16(vgg, 32)
    assert folded.fc1.weight.shape == (4096, 512)
    assert sum(p.numel() for p in folded.parameters()) == 33_638_218  # 134.3M → 33.6M
    plan = plan_fold(vgg, 32)
    assert (plan.fc1_params_before, plan.fc1_params_after) == (102_760_448, 2_097_152)
    assert not plan.is_identity and plan.saves_parameters


def test_fold_at_224_is_the_identity(vgg: nn.Module) -> None:
    plan = plan_fold(vgg, 224)
    assert plan.is_identity and not plan.saves_parameters
    # P is the identity, so the folded weights are fc1's own.
    assert torch.equal(fold_vgg16(vgg, 224).fc1.weight, vgg.classifier[0].weight)


def test_fold_at_64_saves_less(vgg: nn.Module) -> None:
    plan = plan_fold(vgg, 64)
    assert plan.fc1_params_after == 4096 * 512 * 4


def test_fold_does_not_modify_the_model(vgg: nn.Module) -> None:
    before = vgg.classifier[0].weight.clone()
    fold_vgg16(vgg, 32)
    assert torch.equal(vgg.classifier[0].weight, before)
    assert isinstance(vgg.avgpool, nn.AdaptiveAvgPool2d)


def test_non_square_fold_is_exact(vgg: nn.Module) -> None:
    folded = fold_vgg16(vgg, (64, 32))
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert (folded(x) - vgg(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [31, 16, 8, (64, 16)])
def test_fold_refuses_an_empty_trunk_output(vgg: nn.Module, size: int | tuple) -> None:
    with pytest.raises(UsageError, match=r"at least 32"):
        fold_vgg16(vgg, size)


@pytest.mark.parametrize("size", [0, -32, (32,), (32, 32, 3), "abc"])
def test_fold_refuses_bad_sizes(vgg: nn.Module, size: object) -> None:
    with pytest.raises(UsageError, match="fold image size"):
        fold_vgg16(vgg, size)  # type: ignore[arg-type]


def test_fold_refuses_a_model_that_is_not_vgg16() -> None:
    with pytest.raises(UsageError, match="not torchvision's VGG16 layout"):
        fold_vgg16(nn.Sequential(nn.Linear(3, 3)), 32)


def test_fold_refuses_a_different_pool_size(random_vgg16) -> None:
    model = random_vgg16()
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    with pytest.raises(UsageError, match="avgpool output size"):
        fold_vgg16(model, 32)

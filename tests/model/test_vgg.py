"""The seed's claims about the model, and the run folder it is rebuilt from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from exporter.core.errors import EnvironmentUnavailable, InputFileError, UsageError
from exporter.core.runfolder import open_run
from exporter.model.shape import block_ends, parse_unfreeze_from
from exporter.model.vgg import build_vgg16, count_parameters, load_reference_model, unfreeze_from


@pytest.fixture(scope="module")
def vgg(random_vgg16) -> torch.nn.Module:
    return random_vgg16()


def test_features_frozen_and_head_replaced(vgg: torch.nn.Module) -> None:
    assert all(not p.requires_grad for p in vgg.features.parameters())
    assert all(p.requires_grad for p in vgg.classifier.parameters())
    head = vgg.classifier[6]
    assert isinstance(head, torch.nn.Linear)
    assert (head.in_features, head.out_features) == (4096, 10)


def test_parameter_counts(vgg: torch.nn.Module) -> None:
    counts = {c.block: c for c in count_parameters(vgg)}
    assert counts["total"].total == 134_301_514
    assert counts["features"].trainable == 0
    assert counts["classifier[6]"].total == 4096 * 10 + 10
    assert counts["total"].frozen == counts["features"].total


@pytest.mark.parametrize(
    ("spec", "index"), [("features.24", 24), ("1", 24), ("2", 17), ("5", 0), (3, 10)]
)
def test_parse_unfreeze_from(spec: str, index: int) -> None:
    assert parse_unfreeze_from(spec) == index


@pytest.mark.parametrize("spec", ["features.99", "0", "6", "classifier.0", "x"])
def test_parse_unfreeze_from_rejects(spec: str) -> None:
    with pytest.raises(UsageError, match="unfreeze-from"):
        parse_unfreeze_from(spec)


def test_block_ends_are_torchvisions_max_pools() -> None:
    from torchvision.models import vgg16

    with torch.device("meta"):
        features = vgg16().features
    pools = tuple(i for i, m in enumerate(features) if isinstance(m, torch.nn.MaxPool2d))
    assert block_ends() == pools == (4, 9, 16, 23, 30)


# Parsed whenever phase 2 will unfreeze: --recipe finetune or --unfreeze-at.
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recipe": "finetune", "epochs": 2, "unfreeze_from": "6"}, "--unfreeze-from 6"),
        ({"unfreeze_at": 2, "epochs": 2, "unfreeze_from": "features.31"}, "--unfreeze-from"),
    ],
)
def test_a_bad_unfreeze_from_stops_training_before_it_writes(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    from exporter.core.config import DataConfig, TrainConfig
    from exporter.train import fit

    data = DataConfig(source="synthetic", train_size=16, val_size=8, image_size=32)
    cfg = TrainConfig(data=data, weights="none", out=str(tmp_path / "run"), **kwargs)
    with pytest.raises(UsageError, match=message):
        fit(cfg)
    assert not (tmp_path / "run").exists()


def test_unfreeze_flips_exactly_the_named_params(random_vgg16) -> None:
    model = random_vgg16()
    flipped = unfreeze_from(model, 24)
    assert flipped == [f"features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")]
    for name, p in model.features.named_parameters():
        assert p.requires_grad == (int(name.split(".")[0]) >= 24)


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    """A torchvision-format ImageNet-shaped VGG16 state dict (random, seeded; read-only), built
    once for the weight-loading tests: each build initialises 138 M parameters."""
    from torchvision.models import vgg16

    torch.manual_seed(1)
    return vgg16(weights=None).state_dict()


def test_weights_from_pth_and_safetensors(tmp_path: Path, tv_state: dict) -> None:
    torch.save(tv_state, tmp_path / "vgg.pth")
    save_file(tv_state, str(tmp_path / "vgg.safetensors"))
    for name in ("vgg.pth", "vgg.safetensors"):
        model = build_vgg16(num_classes=7, weights=tmp_path / name)
        assert torch.equal(model.features[0].weight, tv_state["features.0.weight"])
        assert torch.equal(model.classifier[0].weight, tv_state["classifier.0.weight"])
        assert model.classifier[6].out_features == 7


def test_weights_with_wrapper_prefixes_and_checkpoint_dict(tmp_path: Path, tv_state: dict) -> None:
    # Real-world files: DataParallel/DDP ("module."), Lightning ({"state_dict": {"model.…"}}).
    state = tv_state
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    lightning = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}
    torch.save(lightning, tmp_path / "pl.ckpt")
    for name in ("dp.pth", "pl.ckpt"):
        model = build_vgg16(num_classes=10, weights=tmp_path / name)
        assert torch.equal(model.features[28].weight, state["features.28.weight"])


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        build_vgg16(num_classes=10, weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(InputFileError, match=r"bad\.pth"):
        build_vgg16(num_classes=10, weights=bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InputFileError, match="not a torchvision VGG16"):
        build_vgg16(num_classes=10, weights=wrong)


def test_imagenet_offline_is_exit_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # An empty hub cache and no network: must be an environment error, never random weights.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision.models._api as api

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(api, "load_state_dict_from_url", no_network, raising=False)
    import torch.hub

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(EnvironmentUnavailable, match="--weights none") as exc:
        build_vgg16(num_classes=10, weights="imagenet")
    assert exc.value.exit_code == 3


def test_open_run_and_reference_model(shared_run_folder: Path) -> None:
    info = open_run(shared_run_folder)  # read only: the session's run, no 537 MB copy
    assert info.num_classes == 10
    assert info.preprocessing.image_size == 32
    model = load_reference_model(info)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_open_run_errors(tmp_path: Path, run_folder: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        open_run(tmp_path / "nope")
    (run_folder / "train.json").write_text("{")
    with pytest.raises(InputFileError, match="malformed"):
        open_run(run_folder)


def test_reference_model_checks_the_manifest_size_and_hash(shared_run_folder: Path) -> None:
    from exporter.core.errors import IntegrityError
    from exporter.core.manifest import FileRecord

    info = open_run(shared_run_folder)  # read only: the session's run, no 537 MB copy
    good = FileRecord.of(shared_run_folder, "model.safetensors")
    load_reference_model(info, expected=good)
    with pytest.raises(IntegrityError, match="does not match manifest"):
        load_reference_model(info, expected=FileRecord(good.path, good.sha256, good.bytes + 1))

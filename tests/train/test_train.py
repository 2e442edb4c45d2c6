"""fit(): the seed's claims, feature cache equivalence, resume, signals, divergence, outputs."""

from __future__ import annotations

import itertools
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from exporter.core.config import DataConfig, TrainConfig
from exporter.core.errors import GateFailed, Interrupted, UsageError
from exporter.core.runfolder import open_run
from exporter.train import TrainEvent, TrainResult, fit, lr_factor, resume_config
from exporter.train.checkpoint import load_checkpoint
from exporter.train.learner import Learner
from exporter.train.loop import Trainer


def tiny(out: Path, *, train_size: int = 16, **kw: object) -> TrainConfig:
    """16 train / 8 val synthetic images at 32 px, batch 8: two steps per epoch.

    Tests that read only the final state pass ``save_every=epochs``: each checkpoint writes
    ~1.5 GB (weights and optimizer state), most of a tiny run's time.
    """
    data = DataConfig(
        source="synthetic", train_size=train_size, val_size=8, image_size=32, augment=False
    )
    base = TrainConfig(data=data, weights="none", epochs=1, batch_size=8, lr=0.01, out=str(out))
    return replace(base, **kw)  # type: ignore[arg-type]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["model"]


@pytest.fixture(scope="module")
def initial(random_vgg16) -> dict[str, torch.Tensor]:
    """The weights fit() starts from at seed 0 (``torch.manual_seed(0)``, then a random
    VGG16): the session's random weights for seed 0, built once (a build takes seconds)."""
    return random_vgg16(seed=0).state_dict()


def test_one_step_changes_only_trainable_params_and_writes_the_run(
    tmp_path: Path, initial: dict[str, torch.Tensor]
) -> None:
    cfg = tiny(tmp_path / "run", train_size=10, batch_size=10)  # one step
    assert cfg.seed == 0  # `initial` is seed 0's starting point
    before = initial
    result = fit(cfg)
    after = weights(result.run_dir)
    for name, tensor in before.items():
        if name.startswith("features."):
            assert torch.equal(after[name], tensor), name
        else:
            assert not torch.equal(after[name], tensor), name
    rec = json.loads((result.run_dir / "train.json").read_text())
    assert rec["schema_version"] == 1 and rec["command"] == "train"
    assert rec["status"] == "completed"
    assert rec["config"]["data"]["source"] == "synthetic"
    assert rec["dataset"]["num_classes"] == 10 and rec["dataset"]["skipped_count"] == 0
    assert set(rec["epochs"][0]) >= {
        "epoch",
        "phase",
        "lr",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "images_per_s",
        "seconds",
    }
    assert len(rec["confusion_matrix"]) == 10
    assert sum(map(sum, rec["confusion_matrix"])) == 8
    # The best epoch's accuracy is the confusion matrix's diagonal share (one epoch here).
    correct = sum(rec["confusion_matrix"][i][i] for i in range(10))
    assert rec["best"]["epoch"] == 1 and rec["best"]["val_accuracy"] == pytest.approx(correct / 8)
    assert rec["feature_cache"]["used"] is True  # auto: frozen trunk and no augmentation
    assert rec["feature_cache"]["feature_shape"] == [512, 1, 1]  # before avgpool
    assert "torch" in rec["environment"]
    assert (result.run_dir / "curves.png").stat().st_size > 1000
    info = open_run(result.run_dir)  # the contract other commands rely on
    assert info.num_classes == 10 and info.best_val_accuracy == rec["best"]["val_accuracy"]


def test_unfreeze_flips_named_params_and_adds_group(tmp_path: Path) -> None:
    cfg = tiny(
        tmp_path / "run", epochs=2, unfreeze_at=2, unfreeze_from="features.24", backbone_lr_mult=0.1
    )
    trainer = Trainer(cfg, progress=None, resume=False)
    trainer._setup()
    assert len(trainer.learner.optimizer.param_groups) == 1
    flipped = trainer.unfreeze()
    assert flipped == [
        "features.24.weight",
        "features.24.bias",
        "features.26.weight",
        "features.26.bias",
        "features.28.weight",
        "features.28.bias",
    ]
    named = dict(trainer.learner.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable == set(flipped) | {n for n in named if n.startswith("classifier.")}
    groups = trainer.learner.optimizer.param_groups
    assert len(groups) == 2
    assert groups[1]["initial_lr"] == pytest.approx(cfg.lr * 0.1)
    assert [id(p) for p in groups[1]["params"]] == [id(named[n]) for n in flipped]


def test_unfreeze_phase_trains_the_trunk_without_cache(
    tmp_path: Path, initial: dict[str, torch.Tensor]
) -> None:
    cfg = tiny(
        tmp_path / "run",
        train_size=10,
        batch_size=10,
        epochs=2,
        unfreeze_at=2,
        unfreeze_from="1",
        save_every=2,
    )
    assert cfg.seed == 0  # `initial` is seed 0's starting point
    before = initial
    rec = fit(cfg).record
    assert [e["phase"] for e in rec["epochs"]] == [1, 2]
    assert [e["feature_cache"] for e in rec["epochs"]] == [True, False]
    after = final_weights(Path(cfg.out))
    assert not torch.equal(after["features.28.weight"], before["features.28.weight"])
    assert torch.equal(after["features.21.weight"], before["features.21.weight"])


@pytest.fixture(scope="module")
def straight(module_tmp: Path) -> TrainResult:
    """Two uninterrupted epochs (feature cache on by auto), shared by the comparisons."""
    return fit(tiny(module_tmp / "run", epochs=2, save_every=2))


def test_cache_and_no_cache_give_the_same_weights(tmp_path: Path, straight: TrainResult) -> None:
    on = straight
    off = fit(tiny(tmp_path / "off", epochs=2, cache_features="off", save_every=2))
    assert on.record["feature_cache"]["used"] and not off.record["feature_cache"]["used"]
    w_on, w_off = final_weights(on.run_dir), final_weights(off.run_dir)
    for name in w_on:
        torch.testing.assert_close(w_on[name], w_off[name], rtol=1e-5, atol=1e-6)
    # The same steps were taken: per-epoch losses agree too.
    for a, b in zip(on.epochs, off.epochs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"]


@pytest.mark.parametrize(
    "stop_at",
    [
        # Each case trains twice and writes 1.5 GB checkpoints: the boundary case is slow-marked.
        pytest.param(("epoch", 1, 0), id="epoch-end", marks=pytest.mark.slow),
        pytest.param(("step", 2, 1), id="mid"),
    ],
)
def test_interrupt_then_resume_is_bitwise_identical(
    tmp_path: Path, stop_at: tuple[str, int, int], straight: TrainResult
) -> None:
    kind, epoch, step = stop_at

    def interrupt(ev: TrainEvent) -> None:
        if ev.kind == kind and ev.epoch == epoch and (kind == "epoch" or ev.step == step):
            os.kill(os.getpid(), signal.SIGINT)  # a real signal through the real handler

    # No periodic checkpoint (save_every=2; ~1.5 GB each): the run resumes from the one the
    # interrupt writes, whether it lands mid-epoch or at an epoch's end.
    cfg = tiny(tmp_path / "resumed", epochs=2, save_every=2)
    with pytest.raises(Interrupted, match="--resume") as exc:
        fit(cfg, progress=interrupt)
    assert exc.value.exit_code == 130
    assert json.loads((Path(cfg.out) / "train.json").read_text())["status"] == "interrupted"
    resumed = fit(resume_config(cfg.out), resume=True)
    a, b = final_weights(straight.run_dir), final_weights(resumed.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.record["epochs"][-1]["train_loss"] == resumed.record["epochs"][-1]["train_loss"]
    assert [e["epoch"] for e in resumed.record["epochs"]] == [1, 2]


def test_nan_loss_stops_with_gate_failure_and_keeps_last_good_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"poison": False}
    logits = Learner.logits  # the training forward

    def poisoned(self: Learner, x: torch.Tensor, cached: bool) -> torch.Tensor:
        out = logits(self, x, cached)
        return out * float("nan") if state["poison"] else out

    def after_epoch_1(ev: TrainEvent) -> None:
        if ev.kind == "epoch" and ev.epoch == 1:
            state["poison"] = True

    monkeypatch.setattr(Learner, "logits", poisoned)
    cfg = tiny(tmp_path / "run", epochs=2)
    with pytest.raises(GateFailed, match="training diverged: loss is nan at epoch 2") as exc:
        fit(cfg, progress=after_epoch_1)
    assert exc.value.exit_code == 1
    run = Path(cfg.out)
    rec = json.loads((run / "train.json").read_text())
    assert rec["status"] == "diverged" and rec["best"]["epoch"] == 1
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 0  # the state after the good epoch 1
    w = weights(run)
    assert all(torch.isfinite(t).all() for t in w.values())


def test_huge_learning_rate_diverges(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "run", lr=1e30, epochs=2, train_size=16)
    with pytest.raises(GateFailed, match="training diverged"):
        fit(cfg)


def test_bad_settings_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--batch-size"):
        fit(tiny(tmp_path / "a", batch_size=0))
    with pytest.raises(UsageError, match="--epochs"):
        fit(tiny(tmp_path / "a", epochs=0))
    with pytest.raises(UsageError, match="--unfreeze-at"):
        fit(tiny(tmp_path / "a", unfreeze_at=3))
    with pytest.raises(UsageError, match="--unfreeze-from"):
        fit(tiny(tmp_path / "a", unfreeze_at=1, unfreeze_from="features.99"))


def test_lr_schedule_warmup_then_cosine() -> None:
    f = [lr_factor(s, total_steps=10, warmup_steps=2) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[1:]))
    assert lr_factor(10, total_steps=10, warmup_steps=2) == pytest.approx(0.0)

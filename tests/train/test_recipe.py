"""The training recipe: size-dependent defaults, phases, the LR schedule, the LR finder."""

from __future__ import annotations

import math

import pytest

from exporter.core.config import DataConfig, TrainConfig
from exporter.data.datasets import resolve_augment
from exporter.train.lr_finder import choose_lr, find_lr, valley
from exporter.train.recipe import phase_lr_factor, plan_phases, unfreeze_epoch


@pytest.mark.parametrize(
    ("mode", "size", "expected"),
    [("auto", 32, False), ("auto", 63, False), ("auto", 64, True), ("auto", 224, True),
     ("on", 32, True), ("off", 224, False)],
)  # fmt: skip
def test_augment_auto_is_off_below_64_px(mode: str, size: int, expected: bool) -> None:
    on, reason = resolve_augment(DataConfig(augment=mode, image_size=size))
    assert on is expected
    assert (mode in reason) if mode != "auto" else reason.startswith("auto: ")


def test_legacy_bool_augment_maps_to_modes() -> None:
    assert DataConfig(augment=True).augment == "on"  # type: ignore[arg-type]
    assert DataConfig.from_dict({"augment": False}).augment == "off"


def test_head_recipe_is_one_phase_with_relative_warmup() -> None:
    (phase,) = plan_phases(TrainConfig(epochs=3), steps_per_epoch=16)
    assert (phase.name, phase.steps, phase.warmup_steps) == ("head", 48, 5)  # 10% of 48
    (short,) = plan_phases(TrainConfig(epochs=1), steps_per_epoch=2)
    assert short.warmup_steps == 1  # at least one step


def test_finetune_splits_epochs_and_restarts_the_warmup() -> None:
    cfg = TrainConfig(recipe="finetune", epochs=5)
    assert unfreeze_epoch(cfg) == 3  # 2 head epochs (40%), then 3 unfrozen
    head, tune = plan_phases(cfg, steps_per_epoch=10)
    assert (head.first_epoch, head.last_epoch, head.steps) == (1, 2, 20)
    assert (tune.first_epoch, tune.last_epoch, tune.start_step, tune.steps) == (3, 5, 20, 30)
    phases = [head, tune]
    f = [phase_lr_factor(s, phases) for s in range(50)]
    assert f[0] == pytest.approx(0.5)  # warm-up: 2 steps
    assert f[1] == pytest.approx(1.0)
    assert f[19] < 0.05  # the head phase decays to ~0 ...
    assert f[20] == pytest.approx(1 / 3)  # ... and the unfrozen phase warms up again (3 steps)
    assert f[22] == pytest.approx(1.0)
    assert all(f[i] >= f[i + 1] for i in range(22, 49))  # cosine, monotone
    assert unfreeze_epoch(TrainConfig(recipe="finetune", epochs=5, freeze_epochs=1)) == 2
    assert unfreeze_epoch(TrainConfig(recipe="finetune", epochs=2)) == 2
    assert unfreeze_epoch(TrainConfig(epochs=5)) is None
    assert unfreeze_epoch(TrainConfig(epochs=5, unfreeze_at=4)) == 4


def test_explicit_warmup_epochs_still_counts_epochs() -> None:
    (phase,) = plan_phases(TrainConfig(epochs=4, warmup_epochs=0.0), steps_per_epoch=10)
    assert phase.warmup_steps == 0
    assert phase_lr_factor(0, [phase]) == pytest.approx(1.0)


def test_valley_lies_on_the_falling_stretch() -> None:
    lrs = [10 ** (-6 + 0.1 * i) for i in range(60)]
    # Flat (too small), then falling from 1e-4 to 1e-2, then blowing up.
    losses = [2.3] * 20 + [2.3 - 0.1 * i for i in range(20)] + [0.4 + 0.5 * i for i in range(20)]
    lr = valley(lrs, losses)
    assert 1e-4 < lr < 1e-2


def _toy_problem(n: int = 512, d: int = 32, k: int = 4):
    import torch

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    x = centers[y] + 1.5 * torch.randn(n, d, generator=g)  # overlapping: not separable
    y = torch.where(torch.rand(n, generator=g) < 0.2, torch.randint(0, k, (n,), generator=g), y)
    head = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, k))
    return head, x, y


def _loss_after(head, x, y, lr: float, steps: int = 30) -> float:
    import copy

    import torch

    layer = copy.deepcopy(head[-1])
    with torch.no_grad():
        h = head[:-1](x)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(layer(h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(torch.nn.functional.cross_entropy(layer(h), y))


def test_lr_finder_picks_between_the_stalled_and_diverging_ends() -> None:
    import torch

    torch.manual_seed(0)
    head, x, y = _toy_problem()
    before = [p.detach().clone() for p in head.parameters()]
    r = find_lr(
        head, x, y, avgpool=torch.nn.Identity(), optimizer="adamw", weight_decay=0.0,
        momentum=0.9, batch_size=64, seed=0,
    )  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, head.parameters(), strict=True))
    assert r.losses[-1] > min(r.losses) + 0.2  # the sweep reached LRs where the loss rises
    assert r.lrs[0] < r.chosen_lr < r.lrs[-1]
    i = min(range(len(r.lrs)), key=lambda k: abs(math.log(r.lrs[k] / r.chosen_lr)))
    assert r.chosen_lr == pytest.approx(r.min_loss_lr / 10)  # Smith's rule
    assert r.losses[i] < r.losses[0] - 0.02  # on the falling part, not the flat start
    # Trained for real, the chosen LR beats both ends of the sweep by a wide margin.
    chosen = _loss_after(head, x, y, r.chosen_lr)
    assert chosen < 0.5 * _loss_after(head, x, y, 1e-6)
    assert chosen < 0.5 * _loss_after(head, x, y, r.lrs[-1])
    assert math.isfinite(chosen)
    d = r.to_dict()
    assert d["chosen_lr"] == r.chosen_lr and len(d["lrs"]) == len(d["losses"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "fast"], "--lr must be a positive number or 'auto'"),
        (["--lr", "-1"], "--lr must be a positive number or 'auto'"),
        (["--recipe", "finetune", "--epochs", "1"], "--recipe finetune needs --epochs >= 2"),
        (["--freeze-epochs", "1", "--epochs", "3"], "--freeze-epochs applies to --recipe finetune"),
        (["--recipe", "finetune", "--epochs", "3", "--freeze-epochs", "3"], "--freeze-epochs must"),
    ],
)
def test_bad_recipe_options_are_exit_2_naming_the_option(
    tmp_path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from exporter.cli import app

    out = tmp_path / "run"
    base = ["train", "--data", "synthetic", "--image-size", "32", "--weights", "none"]
    result = CliRunner().invoke(app, [*base, "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow  # 25-47 s on 2 cores: two trainings with the range test (resume included)
def test_lr_auto_and_recipe_land_in_train_json_and_survive_resume(tmp_path) -> None:
    import json

    from exporter.train import fit, resume_config

    data = DataConfig(source="synthetic", train_size=64, val_size=16, image_size=32)
    cfg = TrainConfig(
        data=data, weights="none", epochs=2, recipe="finetune", lr="auto", out=str(tmp_path / "r")
    )
    record = fit(cfg).record
    finder, recipe = record["lr_finder"], record["recipe"]
    # 64 synthetic images on a random trunk may never make the loss turn up: then the
    # valley rule applies, with a warning (see choose_lr).
    if finder["rule"] == "minimum/10":
        assert finder["chosen_lr"] == pytest.approx(finder["min_loss_lr"] / 10)
        assert finder["warning"] is None
    else:
        assert finder["rule"] == "valley (no divergence)" and finder["stopped"] == "end"
        assert finder["chosen_lr"] == finder["valley_lr"] and "still falling" in finder["warning"]
    assert len(finder["lrs"]) == len(finder["losses"]) >= 10
    assert recipe["peak_lr"] == finder["chosen_lr"] and recipe["lr_source"] == "lr_finder"
    assert recipe["augment"] is False and "below 64 px" in recipe["augment_reason"]
    assert [p["name"] for p in recipe["phases"]] == ["head", "finetune"]
    assert [e["phase"] for e in record["epochs"]] == [1, 2]
    assert record["config"]["lr"] == "auto" and record["config"]["recipe"] == "finetune"
    assert (tmp_path / "r" / "lr_find.png").stat().st_size > 0
    # A resumed run keeps the LR the range test chose instead of running it again.
    resumed_cfg = resume_config(tmp_path / "r")
    from dataclasses import replace

    again = fit(replace(resumed_cfg, epochs=3), resume=True).record
    assert again["recipe"]["peak_lr"] == finder["chosen_lr"]
    assert json.loads((tmp_path / "r" / "train.json").read_text())["epochs"][-1]["epoch"] == 3


def test_lr_finder_falls_back_to_valley_when_the_sweep_never_diverges() -> None:
    lrs = [10 ** (-7 + 0.08 * i) for i in range(101)]  # 1e-7 .. 10
    falling = [2.3 - 0.02 * i for i in range(101)]  # still falling at end_lr
    lr, rule, warning = choose_lr(lrs, falling, "end")
    assert rule.startswith("valley") and warning is not None and "still falling" in warning
    assert lr == valley(lrs, falling) and lr < 1e-1  # not minimum/10 == 1.0
    # A curve that turns up keeps Smith's rule and no warning.
    turned = [2.3 - 0.02 * i for i in range(70)] + [0.9 + 0.1 * i for i in range(31)]
    lr, rule, warning = choose_lr(lrs, turned, "end")
    assert (rule, warning) == ("minimum/10", None)
    assert lr == pytest.approx(lrs[70] / 10)  # the lowest point, 0.9 at index 70

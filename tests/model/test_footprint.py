"""VGG16's footprint: the arithmetic against torchvision and measured peaks, each command's
need, and the image sizes it refuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.core import resources
from exporter.core.errors import UsageError
from exporter.model.footprint import (
    feature_outputs,
    inference_activation_bytes,
    model_params,
    train_activation_bytes,
    train_need,
)


def test_arithmetic_matches_torchvision_vgg16() -> None:
    import torch
    from torchvision.models import vgg16

    with torch.device("meta"):  # shapes only: no 134M random numbers drawn
        model = vgg16(num_classes=10)
    assert model_params(10) == sum(p.numel() for p in model.parameters())
    for size in (32, 37, 64):
        x, sizes = torch.zeros(1, 3, size, size, device="meta"), []
        with torch.no_grad():
            for module in model.features:
                x = module(x)
                sizes.append(x.numel())
        assert sizes == feature_outputs(size), size


_MEASURE = textwrap.dedent(
    """
    import gc, sys, threading, torch
    from torchvision.models.vgg import cfgs, make_layers
    size, batch, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    # The trunk alone (the classifier's activations are a few kB): every activation of it
    # is kept for backward when it trains.
    trunk = make_layers(cfgs["D"])
    x = torch.randn(batch, 3, size, size)
    def step(inp):
        if mode == "infer":
            with torch.no_grad():
                trunk.eval()(inp)
        else:
            trunk(inp).sum().backward()
    def anon():
        # Anonymous memory only: the kernel may drop file-backed pages (libtorch's code)
        # from RSS at any moment on a busy machine, which would hide the step's growth.
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    step(x[:1])  # one-off allocations (weights' grads, kernels) before the baseline
    gc.collect()
    base, peak, done = anon(), [0], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            done.wait(0.0005)
    t = threading.Thread(target=watch)
    t.start()
    step(x)
    done.set()
    t.join()
    print(peak[0] - base)
    """
)


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_activation_estimate_bounds_a_measured_peak(mode: str) -> None:
    # A fresh process: its peak RSS growth over one step is the step's activation memory.
    size, batch = 128, 8  # activations well above the allocator's noise (~10 MB)
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(size), str(batch), mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    measured = int(out.stdout.split()[-1])
    if mode == "infer":
        estimate = inference_activation_bytes(size, batch)
    else:
        estimate = train_activation_bytes(size, batch, first_trainable=0)
    # An upper bound once require()'s margin is on (measured: ~0.99x inference, 0.6-0.8x
    # train), yet not a wild one.
    assert measured <= estimate * resources.ESTIMATE_MARGIN, (measured, estimate)
    assert estimate <= 3 * measured, (measured, estimate)


def test_frozen_trunk_needs_far_less_than_a_trainable_one() -> None:
    frozen = train_activation_bytes(224, 64, None)
    top_two_blocks = train_activation_bytes(224, 64, 17)
    everything = train_activation_bytes(224, 64, 0)
    assert frozen < top_two_blocks < everything


@pytest.mark.parametrize("size", [0, 8, 31, 1025, 100000])
def test_image_size_outside_the_bounds_is_a_usage_error(size: int, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"--image-size {size}"):
        train_need(
            size=size,
            batch=1,
            num_classes=10,
            first_trainable=None,
            optimizer="adamw",
            device="cpu",
            folder=tmp_path,
        )


def test_local_workers_add_up(tmp_path: Path) -> None:
    kw = dict(
        size=32, batch=8, num_classes=10, first_trainable=None, optimizer="adamw", device="cpu"
    )
    one = train_need(**kw, folder=tmp_path)
    two = train_need(**kw, folder=tmp_path, workers=2)
    assert two.memory == 2 * one.memory and two.disk == one.disk  # rank 0 alone writes
    assert "2 processes on this machine" in two.what


def test_nproc_2_checks_both_workers_before_starting_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enough memory for one worker, not for two: exit 3 before torchrun starts anything."""
    from typer.testing import CliRunner

    import exporter.train.launch as launch_mod
    from exporter.cli import app

    monkeypatch.delenv(resources.SKIP_ENV, raising=False)
    per_worker = (
        train_need(
            size=32,
            batch=8,
            num_classes=10,
            first_trainable=None,
            optimizer="adamw",
            device="cpu",
            folder=tmp_path,
        ).memory
        * resources.ESTIMATE_MARGIN
    )
    monkeypatch.setattr(resources, "_meminfo_available", lambda: int(1.5 * per_worker))
    monkeypatch.setattr(resources, "cgroup_memory", lambda: (None, None))
    started: list[object] = []
    monkeypatch.setattr(launch_mod, "launch", lambda *a: started.append(a))
    argv = ["train", "--data", "synthetic", "--weights", "none", "--image-size", "32"]
    argv += ["--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*argv, "--nproc", "2"])
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert "2 processes on this machine" in result.stderr and "MemAvailable" in result.stderr
    assert started == [] and not (tmp_path / "run").exists()
    # One process of the same global batch fits: the check is the workers' sum, not a guess.
    monkeypatch.setattr(resources, "_meminfo_available", lambda: int(2.5 * per_worker))
    result = CliRunner().invoke(app, [*argv, "--nproc", "2"])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    assert len(started) == 1


_TRAIN_PEAK = textwrap.dedent(
    """
    import sys
    from exporter.core.config import DataConfig, TrainConfig
    from exporter.train import fit

    data = DataConfig(source="synthetic", train_size=32, val_size=16, image_size=32)
    fit(TrainConfig(data=data, weights="none", epochs=1, batch_size=16, out=sys.argv[1]))
    status = open("/proc/self/status").read().split("\\n")
    print(int(next(l for l in status if l.startswith("VmHWM")).split()[1]) * 1024)
    """
)


@pytest.mark.slow
def test_train_estimate_bounds_a_whole_training_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run at 32 px, batch 16 (imports, model, AdamW, an epoch, the saves): its peak
    RSS stays under what require() checks (2.95 GiB measured against 2.3 GiB estimated
    before the process's own imports were counted)."""
    monkeypatch.setenv(resources.SKIP_ENV, "1")
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_PEAK, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    peak = int(out.stdout.split()[-1])
    need = train_need(
        size=32,
        batch=16,
        num_classes=10,
        first_trainable=None,
        optimizer="adamw",
        device="cpu",
        folder=tmp_path,
    )
    assert peak <= need.memory * resources.ESTIMATE_MARGIN, (peak, need.memory)
    assert need.memory <= 2 * peak, (peak, need.memory)

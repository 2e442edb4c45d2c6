"""The resource check: what this machine has, and the refusals require() makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.core import resources
from exporter.core.errors import UsageError
from exporter.core.resources import Need, NotEnoughResources, require
from exporter.model.footprint import train_activation_bytes, train_need


def test_huge_size_message_names_the_memory_it_would_need(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"100000 px image alone needs [\d.]+ GiB"):
        resources.check_image_size(100000)


def test_not_enough_memory_is_exit_3_with_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: (1 << 30, "MemAvailable"))
    need = train_need(
        size=224,
        batch=64,
        num_classes=10,
        first_trainable=0,
        optimizer="adamw",
        device="cpu",
        folder=tmp_path,
    )
    with pytest.raises(NotEnoughResources, match=r"needs about [\d.]+ GiB.*only 1.0 GiB") as e:
        require(need)
    assert e.value.exit_code == 3
    monkeypatch.setenv(resources.SKIP_ENV, "1")
    require(need)  # the escape hatch


def test_not_enough_disk_is_exit_3_with_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "free_disk", lambda folder: 100 << 20)
    with pytest.raises(NotEnoughResources, match=r"write about 2.0 GiB .* only 100 MiB is free"):
        require(Need("tlx export", memory=0, disk=2 << 30, folder=tmp_path))


def test_cgroup_limit_lowers_available_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "memory.max").write_text(str(3 << 30))
    (tmp_path / "memory.current").write_text(str(1 << 30))
    monkeypatch.setenv("TLX_CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(resources, "_meminfo_available", lambda: 16 << 30)
    assert resources.available_memory() == (2 << 30, "the cgroup memory limit")
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.available_memory() == (16 << 30, "MemAvailable")


def test_the_refusal_figure_agrees_with_the_model_arithmetic() -> None:
    # core/resources.py's per-pixel constant stands in for model/footprint.py's arithmetic.
    for size in (resources.MAX_IMAGE_SIZE, 2 * resources.MAX_IMAGE_SIZE, 100000):
        per_pixel = train_activation_bytes(size, 1, 0) / size / size
        assert abs(per_pixel - resources.TRAIN_BYTES_PER_PIXEL) < 0.001 * per_pixel, size

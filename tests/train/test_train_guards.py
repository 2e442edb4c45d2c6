"""Training inputs that used to hang or mislead quietly: a rendezvous port held by another
program, ``--lr auto`` on too few images, a diverging loss, synthetic data with fewer
training images than classes."""

from __future__ import annotations

import math
import socket
import threading
from datetime import timedelta

import pytest

from exporter.core.config import SYNTHETIC_CLASSES, DataConfig, TrainConfig
from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.train.common import DIVERGED_FACTOR, divergence_warning
from exporter.train.launch import check_rdzv_endpoint
from exporter.train.lr_finder import MIN_IMAGES, find_lr


@pytest.mark.timeout(30)
def test_a_port_held_by_another_server_is_exit_3_within_seconds() -> None:
    # torchrun's store client would wait for a reply forever (300 s+ of silence).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)
        port = held.getsockname()[1]
        with pytest.raises(EnvironmentUnavailable, match=f"127.0.0.1:{port}: another program"):
            check_rdzv_endpoint(f"127.0.0.1:{port}", timeout=2)


@pytest.mark.timeout(30)
def test_a_server_that_answers_garbage_is_refused_too() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)

        def answer() -> None:
            conn, _ = held.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(EnvironmentUnavailable, match="not a PyTorch rendezvous store"):
            check_rdzv_endpoint(f"127.0.0.1:{held.getsockname()[1]}", timeout=5)
        t.join(5)


@pytest.mark.timeout(60)
def test_a_real_store_or_a_free_port_passes() -> None:
    from torch.distributed import TCPStore

    for libuv in (True, False):
        store = TCPStore(
            "127.0.0.1", 0, is_master=True, multi_tenant=True, use_libuv=libuv,
            timeout=timedelta(seconds=10),
        )  # fmt: skip
        check_rdzv_endpoint(f"127.0.0.1:{store.port}")  # another agent hosts it: fine
        assert not store.check(["tlx-probe"])  # the probe left no key behind
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_rdzv_endpoint(f"127.0.0.1:{free}")  # nothing there: this node will host it
    check_rdzv_endpoint("not a host name")  # torchrun refuses it with its own message


def test_lr_auto_on_too_few_images_uses_the_default_lr_with_a_warning() -> None:
    import torch

    head = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(10, 8), torch.arange(10) % 3
    r = find_lr(
        head, x, y, avgpool=torch.nn.Identity(), optimizer="adamw", weight_decay=0.0,
        momentum=0.9, batch_size=64, seed=0,
    )  # fmt: skip
    assert r.chosen_lr == TrainConfig.lr and r.stopped == "skipped" and r.lrs == []
    assert r.warning is not None and "only 10 training images" in r.warning
    assert f"at least {MIN_IMAGES}" in r.warning
    assert r.to_dict()["warning"] == r.warning  # what train.json records


def test_divergence_warning() -> None:
    chance = math.log(10)
    assert divergence_warning([2.3, 1.9, 1.2], 10) is None
    assert divergence_warning([2.3, None], 10) is None  # NaN already stops training
    exploded = divergence_warning([34_076.0], 10)
    assert exploded is not None and "uniform guess" in exploded and "--lr" in exploded
    assert divergence_warning([DIVERGED_FACTOR * chance - 1], 10) is None
    rising = divergence_warning([0.5, 2.0, 6.0], 10)
    assert rising is not None and "rose from 0.5" in rising


def test_synthetic_train_size_below_the_classes_is_refused() -> None:
    from exporter.data.synthetic import NUM_CLASSES

    assert SYNTHETIC_CLASSES == NUM_CLASSES
    for n in (1, NUM_CLASSES - 1):
        with pytest.raises(UsageError, match=f"--train-size {n}: the synthetic data has 10"):
            DataConfig(source="synthetic", train_size=n)
    DataConfig(source="synthetic", train_size=NUM_CLASSES, val_size=1)  # every class once


@pytest.mark.slow  # one epoch of VGG16 at 32 px on 10 images
def test_lr_auto_on_ten_images_records_the_fallback_in_train_json(tmp_path) -> None:
    from exporter.train import fit

    data = DataConfig(source="synthetic", train_size=10, val_size=10, image_size=32)
    cfg = TrainConfig(data=data, weights="none", epochs=1, lr="auto", out=str(tmp_path / "r"))
    record = fit(cfg).record
    finder = record["lr_finder"]
    assert finder["stopped"] == "skipped" and "only 10 training images" in finder["warning"]
    assert record["recipe"]["peak_lr"] == TrainConfig.lr
    assert not (tmp_path / "r" / "lr_find.png").exists()

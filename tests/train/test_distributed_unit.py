"""The pieces of multi-process training that need no second process: shards, the split of
a global batch, per-image dropout masks, exact counts, and the torchrun command line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from exporter.core.errors import UsageError
from exporter.train.batches import index_batches
from exporter.train.distributed import DistContext, shard_range
from exporter.train.launch import LaunchSpec, torchrun_args
from exporter.train.learner import summarize
from exporter.train.modules import SampleDropout, sample_masks, set_dropout_keys


@pytest.mark.parametrize("n", [0, 1, 2, 7, 9, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_once(n: int, world: int) -> None:
    ranges = [shard_range(n, r, world) for r in range(world)]
    items = [i for a, b in ranges for i in range(a, b)]
    assert items == list(range(n))  # in order, no padding, no duplicate
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def _shares(n: int, batch: int, world: int, step: int = 0) -> list[list[tuple]]:
    """Every rank's (indices, real) per step, from the real training code."""
    return [
        index_batches(
            list(range(n)),
            batch_size=batch,
            seed=3,
            dist=DistContext(rank=rank, world_size=world),
            epoch=2,
            start_step=step,
        )
        for rank in range(world)
    ]


@pytest.mark.parametrize(("n", "batch", "world"), [(21, 8, 2), (17, 8, 2), (20, 6, 3), (5, 4, 4)])
def test_rank_shares_of_a_step_are_the_single_process_batch(n: int, batch: int, world: int) -> None:
    (single,) = _shares(n, batch, 1)
    ranks = _shares(n, batch, world)
    assert all(len(r) == len(single) for r in ranks)  # every rank takes the same steps
    for k, (idx, real) in enumerate(single):
        assert real.all()
        mine = [(i, ok) for r in ranks for i, ok in zip(*r[k], strict=True)]
        assert sorted(i for i, ok in mine if ok) == sorted(idx.tolist())  # pads excluded
        sizes = {len(r[k][0]) for r in ranks}  # equal shares (DDP needs every rank each step)
        assert sizes == {batch // world} or (k == len(single) - 1 and len(sizes) == 1)
    pads = sum(int((~real).sum()) for r in ranks for _, real in r)
    assert pads == -n % world


def test_resume_skips_the_steps_already_taken() -> None:
    full = _shares(21, 8, 2)
    later = _shares(21, 8, 2, step=1)
    for a, b in zip(full, later, strict=True):
        assert [x.tolist() for x, _ in a[1:]] == [x.tolist() for x, _ in b]


def test_dropout_masks_do_not_depend_on_the_batch_split() -> None:
    drop = SampleDropout(0.5, layer=2).train()
    model = SimpleNamespace(classifier=[drop])
    x = torch.randn(8, 4096)
    idx = torch.tensor([5, 1, 9, 0, 3, 7, 2, 11])
    set_dropout_keys(model, seed=1, epoch=3, indices=idx)
    whole = drop(x)
    parts = []
    for part in (slice(0, 3), slice(3, 8)):
        set_dropout_keys(model, seed=1, epoch=3, indices=idx[part])
        parts.append(drop(x[part]))
    assert torch.equal(whole, torch.cat(parts))
    kept = (whole != 0).float().mean().item()
    assert 0.45 < kept < 0.55
    torch.testing.assert_close(whole[whole != 0], x[whole != 0] * 2)
    set_dropout_keys(model, seed=1, epoch=4, indices=idx)  # a new epoch draws new masks
    assert not torch.equal((drop(x) != 0), (whole != 0))
    assert torch.equal(drop.eval()(x), x)


def _splitmix64(x: int) -> int:
    """The 64-bit reference: one round of SplitMix64 (Steele et al., 2014) on Python ints."""
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_mask_stream_is_splitmix64_on_every_device() -> None:
    # int64 tensor arithmetic must wrap exactly like the 64-bit reference.
    got = sample_masks([2**63 + 12345, 7], 5, 6, torch.device("cpu"))
    for row, key in zip(got.tolist(), [2**63 + 12345, 7], strict=True):
        seed = _splitmix64(key ^ 5)
        gamma = 0x9E3779B97F4A7C15
        ref = [(_splitmix64((seed + j * gamma) % 2**64) >> 40) / 2**24 for j in range(6)]
        assert row == pytest.approx(ref, abs=0)
    # An image's key: SplitMix64 chained over (seed, epoch, dataset index).
    model = SimpleNamespace(classifier=[SampleDropout(0.5, layer=2)])
    set_dropout_keys(model, seed=3, epoch=2, indices=torch.tensor([0, 9, 2**40]))
    want = [_splitmix64(_splitmix64(_splitmix64(3) ^ 2) ^ i) for i in (0, 9, 2**40)]
    assert [k % 2**64 for k in model.classifier[0].keys] == want


def test_counts_are_exact_sums() -> None:
    cm = np.array([[3, 1], [0, 5]])
    got = summarize(cm, loss_sum=4.5, class_names=["a", "b"])
    assert got["count"] == 9 and got["accuracy"] == pytest.approx(8 / 9)
    assert got["loss"] == pytest.approx(0.5)
    assert got["per_class_accuracy"] == {"a": 0.75, "b": 1.0}
    empty = summarize(np.zeros((2, 2), dtype=np.int64), 0.0, ["a", "b"])
    assert empty["count"] == 0 and empty["per_class_accuracy"] == {"a": None, "b": None}


def test_torchrun_command_line() -> None:
    one = torchrun_args(LaunchSpec(nproc=2), ["--epochs", "1"])
    assert "--standalone" in one and one[-4:] == ["exporter", "train", "--epochs", "1"]
    assert one[one.index("--nproc-per-node") + 1] == "2"
    multi = torchrun_args(
        LaunchSpec(nproc=8, nnodes=2, rdzv_endpoint="node0:29400", max_restarts=3), []
    )
    assert "--standalone" not in multi
    for opt, value in [("--nnodes", "2"), ("--rdzv-endpoint", "node0:29400")]:
        assert multi[multi.index(opt) + 1] == value
    assert multi[multi.index("--max-restarts") + 1] == "3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nproc": 0}, "--nproc"),
        ({"nproc": 2, "nnodes": 2}, "--rdzv-endpoint"),
        ({"nproc": 2, "max_restarts": -1}, "--max-restarts"),
    ],
)
def test_bad_launcher_options(options: dict[str, int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LaunchSpec(**options)


def test_global_batch_must_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UsageError, match="--batch-size 8 is the global batch"):
        init_distributed("cpu", 8)


def test_only_the_reduced_flags_stop_a_rank() -> None:
    # A signal that reached this rank after the step's all-reduce waits for the next one,
    # or this rank would stop a step before the others (a deadlock in the next collective).
    from exporter.train.stop import StopSignal

    rank = StopSignal(DistContext(rank=0, world_size=2))
    rank.signum = 15
    assert rank.adopt(np.zeros(2)) is False
    other = StopSignal(DistContext(rank=1, world_size=2))
    other.signum = None
    assert other.adopt(np.array([0.0, 1.0])) is True and other.signum == 15

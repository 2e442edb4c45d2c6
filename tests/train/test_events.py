"""What a training event says: the log line of "start"/"epoch", the progress of the others."""

from __future__ import annotations

from exporter.train import TrainEvent

METRICS = {
    "epoch": 2,
    "train_loss": None,  # diverged: recorded as None, shown as nan
    "train_accuracy": 0.5,
    "val_loss": 1.23456,
    "val_accuracy": 0.25,
    "images_per_s": 12.34,
    "seconds": 3.21,
    "feature_cache": True,
}


def test_start_and_epoch_events_are_log_lines() -> None:
    info = {"run_dir": "runs/a", "device": "cpu"}
    start = TrainEvent("start", epochs=3, steps=4, info=info)
    assert start.log_line() == "training: runs/a on cpu, 3 epochs of 4 steps"
    assert start.stage_progress() is None
    two = TrainEvent("start", epochs=3, steps=4, info={**info, "world_size": 2})
    assert two.log_line() == "training: runs/a on 2 processes (cpu on rank 0), 3 epochs of 4 steps"
    epoch = TrainEvent("epoch", epoch=2, epochs=3, metrics=METRICS)
    assert epoch.log_line() == (
        "epoch 2/3: train loss nan acc 0.500 | val loss 1.2346 acc 0.250 | 12.3 img/s 3.2 s "
        "(feature cache)"
    )


def test_steps_cache_and_range_test_are_stage_progress() -> None:
    step = TrainEvent("step", epoch=1, epochs=3, step=5, steps=10, loss=0.5, accuracy=0.75)
    assert step.stage_progress() == ("epoch 1/3 loss 0.5000 acc 0.750 0.0 img/s", 5, 10)
    assert step.log_line() is None
    cache = TrainEvent("cache", step=0, steps=0)
    assert cache.stage_progress() == ("caching frozen features", 0, 1)  # never a zero total
    assert TrainEvent("lr_find").stage_progress() == ("LR range test", 0, 1)
    assert TrainEvent("done").stage_progress() is None and TrainEvent("done").log_line() is None

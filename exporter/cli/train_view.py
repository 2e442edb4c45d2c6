"""What ``tlx train`` shows: progress bars or log lines while training, the summary table after."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from exporter.cli.app import err_console, say, table


class TrainProgress:
    """Renders TrainEvents: a rich bar per epoch on a TTY, plain log lines otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def preparing(self) -> None:
        """Until the first event: building the datasets (an image folder is fully decoded
        once to find bad files) and the model can take minutes, so show that something runs."""
        if self.enabled:
            self._start_bar("loading data and model", None)

    def __call__(self, ev: Any) -> None:
        if ev.kind == "start":
            self.close()
            # Always logged: scripts (and tests) wait for it before sending signals.
            world = ev.info.get("world_size", 1)
            where = f"{world} processes ({ev.info['device']} on rank 0)" if world > 1 else ""
            say(
                f"training: {ev.info['run_dir']} on {where or ev.info['device']}, {ev.epochs} "
                f"epochs of {ev.steps} steps",
                err=True,
            )
            return
        if ev.kind == "epoch":
            self.close()
            m = ev.metrics
            say(
                f"epoch {m['epoch']}/{ev.epochs}: train loss {fmt(m['train_loss'])} acc "
                f"{m['train_accuracy']:.3f} | val loss {fmt(m['val_loss'])} acc "
                f"{m['val_accuracy']:.3f} | {m['images_per_s']:.1f} img/s {m['seconds']:.1f} s"
                + (" (feature cache)" if m.get("feature_cache") else ""),
                err=True,
            )
            return
        if ev.kind == "lr_find":
            if self.enabled:
                self._start_bar("LR range test", None)
            return
        if not self.enabled or ev.kind not in ("step", "cache"):
            return
        label = "feature cache" if ev.kind == "cache" else f"epoch {ev.epoch}/{ev.epochs}"
        if self.bar is None or self.bar_label != label:
            self._start_bar(label, ev.steps)
        extra = ""
        if ev.kind == "step":
            extra = f"loss {ev.loss:.4f} acc {ev.accuracy:.3f} {ev.images_per_s:.1f} img/s"
        self.bar.update(self.task, completed=ev.step, extra=extra)

    def _start_bar(self, label: str, total: int | None) -> None:
        from rich import progress as rp

        self.close()
        # No total (setup): a spinner and the elapsed time; otherwise a bar with N/M and ETA.
        columns = (
            (rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.TimeElapsedColumn())
            if total is None
            else (
                rp.TextColumn("{task.description}"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TimeRemainingColumn(),
                rp.TextColumn("{task.fields[extra]}"),
            )
        )
        self.bar = rp.Progress(*columns, console=err_console, transient=True)
        self.bar.start()
        self.bar_label = label
        self.task = self.bar.add_task(label, total=total, extra="")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def summary_table(record: dict[str, Any]) -> Table:
    cols = ("epoch", "phase", "lr", "train loss", "train acc", "val loss", "val acc", "img/s", "s")
    best = record["best"]["epoch"]
    rows = (
        (
            f"{e['epoch']}{' *' if e['epoch'] == best else ''}",
            str(e["phase"]),
            f"{e['lr']:.2e}",
            fmt(e["train_loss"]),
            f"{e['train_accuracy']:.3f}",
            fmt(e["val_loss"]),
            f"{e['val_accuracy']:.3f}",
            f"{e['images_per_s']:.1f}",
            f"{e['seconds']:.1f}",
        )
        for e in record["epochs"]
    )
    title = f"tlx train: {record['dataset']['name']} ({record['status']})"
    out = table(title, cols, rows, left=0)
    # In 80 columns rich squeezed "1.00e-03" into "1.00e-0" over "3"; the headers wrap instead.
    out.columns[2].no_wrap = True
    return out


def fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"

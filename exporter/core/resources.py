"""Resources checked before heavy work: what this machine has, and the check against a need.

A request the machine cannot serve should stop in a second with the numbers, not after
minutes when the kernel kills the process (exit 137, no message). Each command estimates
its peak memory (VGG16's weights and activations at the run's image size and batch:
:mod:`exporter.model.footprint`) and the bytes it will write, and :func:`require` compares
them with what this machine has and refuses:

- exit 2 (:class:`~exporter.core.errors.UsageError`) for an impossible request: an image
  size outside ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``;
- exit 3 (:class:`NotEnoughResources`) when the request is possible but this machine lacks
  the memory or disk: the message gives needed and available bytes.

:func:`require` adds the allocator's slack (``ESTIMATE_MARGIN``) to the estimates.
``TLX_SKIP_RESOURCE_CHECK=1`` skips the check (e.g. with swap the estimate does not count).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from exporter.core.errors import EnvironmentUnavailable, UsageError
from exporter.core.machine import cgroup_memory

# --image-size bounds (here, not in core/config, because this arithmetic sets them). Below
# 32 px VGG16's five 2×2 pools leave no pixel. Above 1024 px (4.6× the 224 px its ImageNet
# weights were trained at) one image needs ~0.8 GiB of activations to run and ~2.2 GiB to
# train on, so batches no longer fit common machines.
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024

F32 = 4
GIB = 1 << 30
MIB = 1 << 20
# Allocator slack and buffers the formulas leave out (autograd bookkeeping, im2col work
# space, framework caches): the estimate is multiplied by this.
ESTIMATE_MARGIN = 1.25
# Activation bytes per input pixel of one VGG16 training step, for the message that refuses
# an image size (core cannot import the model's arithmetic; tests/model/test_footprint.py
# checks that the two agree above MAX_IMAGE_SIZE).
TRAIN_BYTES_PER_PIXEL = 2238
SKIP_ENV = "TLX_SKIP_RESOURCE_CHECK"


class NotEnoughResources(EnvironmentUnavailable):
    """The request is valid but this machine lacks the memory or disk for it (exit 3)."""


# --- the image sizes VGG16 takes ---------------------------------------------------------


def check_image_size(size: int, *, option: str = "--image-size") -> None:
    """Refuse a size VGG16 cannot take (below 32 px five pools leave no pixel) or beyond the
    documented maximum (exit 2)."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise UsageError(f"{option} must be a whole number of pixels, got {size!r}")
    if size < MIN_IMAGE_SIZE:
        raise UsageError(
            f"{option} {size}: VGG16 needs at least {MIN_IMAGE_SIZE} px (its five 2×2 pools "
            f"halve the image five times)"
        )
    if size > MAX_IMAGE_SIZE:
        raise UsageError(
            f"{option} {size}: the largest supported size is {MAX_IMAGE_SIZE} px (one "
            f"{size} px image alone needs {_fmt(size * size * TRAIN_BYTES_PER_PIXEL)} of "
            "activations to train on)"
        )


# --- what this machine has ----------------------------------------------------------------


def available_memory() -> tuple[int, str]:
    """Bytes of memory this process can still get, and where the number comes from.

    ``MemAvailable`` (what the kernel can hand out without swapping), lowered to the cgroup's
    remaining limit when one is set (a container's limit is what the OOM killer enforces).
    """
    avail, source = _meminfo_available(), "MemAvailable"
    limit, used = cgroup_memory()
    cgroup = None if limit is None or used is None else max(limit - used, 0)
    if cgroup is not None and (avail is None or cgroup < avail):
        avail, source = cgroup, "the cgroup memory limit"
    if avail is None:
        return 1 << 62, "unknown (no /proc/meminfo)"
    return avail, source


def available_gpu_memory() -> tuple[int, str]:
    """Free memory of the current CUDA device (``torch.cuda.mem_get_info``)."""
    import torch

    if not torch.cuda.is_available():
        return 1 << 62, "no CUDA device (checked later)"
    return int(torch.cuda.mem_get_info()[0]), "free GPU memory"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_disk(folder: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


# --- the check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What one command will need: peak memory and bytes written under ``folder``."""

    what: str  # e.g. "tlx train at 224 px, batch 64"
    memory: int
    disk: int
    folder: Path
    device: str = "cpu"  # "cuda": the memory is the GPU's


def require(need: Need) -> None:
    """Refuse (exit 3, with the numbers) when this machine lacks the memory or disk.

    Raises:
        NotEnoughResources: the estimate exceeds what is available.
    """
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return
    memory = int(need.memory * ESTIMATE_MARGIN)
    avail, source = available_gpu_memory() if need.device == "cuda" else available_memory()
    if memory > avail:
        raise NotEnoughResources(
            f"{need.what} needs about {_fmt(memory)} of memory, but only {_fmt(avail)} is "
            f"available ({source}): use a smaller --image-size or batch size, free memory, "
            f"or set {SKIP_ENV}=1 if you know better"
        )
    free = free_disk(need.folder)
    if need.disk > free:
        raise NotEnoughResources(
            f"{need.what} will write about {_fmt(need.disk)} to {need.folder}, but only "
            f"{_fmt(free)} is free there: free disk space or choose another folder"
        )


def _fmt(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"

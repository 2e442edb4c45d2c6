"""Resources checked before heavy work: memory and disk a command will need, and what is here.

A request the machine cannot serve should stop in a second with the numbers, not after
minutes when the kernel kills the process (exit 137, no message). Each command estimates
its peak memory (VGG16's weights and activations at the run's image size and batch) and the
bytes it will write, compares them with what this machine has, and refuses:

- exit 2 (:class:`~exporter.core.errors.UsageError`) for an impossible request: an image
  size outside ``MIN_IMAGE_SIZE..MAX_IMAGE_SIZE``;
- exit 3 (:class:`NotEnoughResources`) when the request is possible but this machine lacks
  the memory or disk: the message gives needed and available bytes.

The estimates are upper bounds with a margin, not predictions: fp32 everywhere (AMP only
lowers them), every activation autograd keeps, the allocator's slack
(``ESTIMATE_MARGIN``). ``tests/core/test_resources.py`` checks the activation bound against a
measured peak. ``TLX_SKIP_RESOURCE_CHECK=1`` skips the check (e.g. with swap the estimate
does not count).
"""

from __future__ import annotations

import itertools
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
# torchvision's VGG16 ``features``: conv widths and "M" for a 2×2 max pool.
VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M")
VGG16_FEATURES += (512, 512, 512, "M")
TRUNK_PARAMS = 14_714_688  # the 13 conv layers' weights and biases
POOLED = 512 * 7 * 7  # AdaptiveAvgPool2d((7, 7)) output, whatever the input size
SKIP_ENV = "TLX_SKIP_RESOURCE_CHECK"


class NotEnoughResources(EnvironmentUnavailable):
    """The request is valid but this machine lacks the memory or disk for it (exit 3)."""


# --- VGG16 arithmetic -------------------------------------------------------------------


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
            f"{size} px image alone needs {_fmt(train_activation_bytes(size, 1, 0))} of "
            "activations to train on)"
        )


def feature_outputs(size: int) -> list[int]:
    """Elements per image of each ``features[i]`` output (conv, ReLU, pool), in order."""
    out, side, channels = [], size, 3
    for item in VGG16_FEATURES:
        if item == "M":
            side //= 2
            out.append(channels * side * side)
        else:
            channels = int(item)
            out += [channels * side * side] * 2  # conv, then its (in-place) ReLU
    return out


def model_params(num_classes: int) -> int:
    """Parameters of VGG16 with a ``num_classes`` head (fc1 is 25088×4096 at any size)."""
    head = (POOLED * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * num_classes + num_classes)
    return TRUNK_PARAMS + head


def weights_bytes(num_classes: int, *, bytes_per_param: float = F32) -> int:
    return int(model_params(num_classes) * bytes_per_param)


def inference_activation_bytes(size: int, batch: int) -> int:
    """Peak activation memory of one eager forward pass without autograd: the largest
    input + output pair alive at once, a convolution work buffer as large as the largest
    activation (measured: ~2.9 of them at 128 px), and the input batch."""
    sizes = [3 * size * size, *feature_outputs(size), POOLED, 4096, 4096]
    pair = max(a + b for a, b in itertools.pairwise(sizes))
    return batch * F32 * (pair + max(sizes) + sizes[0])


def train_activation_bytes(size: int, batch: int, first_trainable: int | None) -> int:
    """Activation memory of one training step.

    Autograd keeps the input of every layer from the first trainable one on (pools also keep
    int64 indices: two floats each); the backward pass adds the largest gradient pair. With
    the whole trunk frozen (``first_trainable`` None) the trunk runs like inference.
    """
    if first_trainable is None:
        return inference_activation_bytes(size, batch) + batch * F32 * 3 * (POOLED + 4096)
    outs, kinds = feature_outputs(size), _module_kinds()
    # A ReLU works in place: its output is its conv's output, kept once (as the ReLU's).
    start = max(first_trainable - 1, 0)
    kept = sum(n for n, kind in zip(outs[start:], kinds[start:], strict=True) if kind != "conv")
    kept += sum(
        2 * n
        for i, (n, k) in enumerate(zip(outs, kinds, strict=True))
        if k == "M" and i >= first_trainable
    )
    kept += POOLED + 2 * 4096 + 3 * size * size
    return batch * F32 * kept + inference_activation_bytes(size, batch)


def _module_kinds() -> list[str]:
    kinds: list[str] = []
    for item in VGG16_FEATURES:
        kinds += ["M"] if item == "M" else ["conv", "relu"]
    return kinds


# --- what this machine has ----------------------------------------------------------------


def available_memory() -> tuple[int, str]:
    """Bytes of memory this process can still get, and where the number comes from.

    ``MemAvailable`` (what the kernel can hand out without swapping), lowered to the cgroup's
    remaining limit when one is set (a container's limit is what the OOM killer enforces).
    """
    avail, source = _meminfo_available(), "MemAvailable"
    cgroup = _cgroup_remaining()
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


def _cgroup_remaining() -> int | None:
    limit, used = cgroup_memory()
    if limit is None or used is None:
        return None
    return max(limit - used, 0)


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


# --- per command ------------------------------------------------------------------------

# Commands other than train take the size from the run, not from an option.
RUN_SIZE = "the run's image size (train.json preprocessing.image_size)"
REPORT_BYTES = 16 * MIB  # JSON/Markdown/CSV/PNG reports: a few hundred kB, with room
# Glibc keeps freed buffers for reuse while training on the CPU (train/allocator.py): ~40%
# more peak memory, measured at 224 px.
CPU_TRAIN_ALLOCATOR_FACTOR = 1.4
# What a training process holds before its first tensor: Python, torch, torchvision, numpy
# and tlx's own modules. Measured 683 MiB of RSS right after the imports (CPU torch); at
# 32 px, batch 16 a whole training process peaked at 2.95 GiB against 1.86 GiB of weights,
# gradients, optimizer state and activations, so this was most of what the estimate missed.
TRAIN_RUNTIME_BYTES = 700 * MIB


def train_need(
    *,
    size: int,
    batch: int,
    num_classes: int,
    first_trainable: int | None,
    optimizer: str,
    device: str,
    folder: Path,
    workers: int = 1,
) -> Need:
    """``tlx train``: the process itself (its imported libraries), weights, gradients and
    optimizer state of the trainable part, the activations of one step, and
    model.safetensors + checkpoint/ on disk.

    ``workers``: processes of this machine that train at once (``--nproc``), each with
    ``batch`` images: their memory adds up; only one of them writes the run folder.
    """
    check_image_size(size)
    weights = weights_bytes(num_classes)
    trainable = model_params(num_classes) - TRUNK_PARAMS
    if first_trainable is not None:
        trainable += TRUNK_PARAMS  # an upper bound: the top blocks hold most of them anyway
    states = 2 if optimizer == "adamw" else 1
    grads_and_states = trainable * F32 * (1 + states)
    activations = train_activation_bytes(size, batch, first_trainable)
    if device == "cpu":
        activations = int(activations * CPU_TRAIN_ALLOCATOR_FACTOR)
    memory = (TRAIN_RUNTIME_BYTES + weights + grads_and_states + activations) * workers
    disk = 2 * weights + trainable * F32 * states + REPORT_BYTES  # weights + checkpoint/
    what = f"tlx train at {size} px, batch {batch}"
    if workers > 1:
        what += f" per process, {workers} processes on this machine"
    return Need(what, memory, disk, folder, device)


def export_need(
    *, size: int, batch: int, num_classes: int, files: dict[str, float], folder: Path
) -> Need:
    """``tlx export``: the eager model, the exporter's copy, the file serialized in memory
    (TorchScript and .pt2 are written from a buffer) and the loaded-back file (four copies of
    the weights), activations of the check batch twice; ``files`` maps each file to its
    bytes per parameter (4 for fp32, 2 for fp16)."""
    check_image_size(size, option=RUN_SIZE)
    weights = weights_bytes(num_classes)
    memory = 4 * weights + 2 * inference_activation_bytes(size, max(batch, 2))
    disk = sum(weights_bytes(num_classes, bytes_per_param=b) for b in files.values())
    return Need(f"tlx export at {size} px, batch {batch}", memory, disk + REPORT_BYTES, folder)


def verify_need(
    *, size: int, batches: tuple[int, ...], samples: int, num_classes: int, folder: Path
) -> Need:
    """``tlx verify``: the reference and one candidate (an ONNX Runtime session may hold a
    second copy), the inputs, and the largest batch's activations in each."""
    check_image_size(size, option=RUN_SIZE)
    largest = max(batches)
    inputs = (samples + sum(batches)) * 3 * size * size * F32
    memory = 3 * weights_bytes(num_classes) + 2 * inference_activation_bytes(size, largest)
    memory += 2 * inputs  # the inputs and both models' logits-sized copies of their batches
    return Need(f"tlx verify at {size} px, batch {largest}", memory, REPORT_BYTES, folder)


def bench_need(
    *,
    size: int,
    batches: tuple[int, ...],
    runtimes: int,
    arenas: int,
    num_classes: int,
    folder: Path,
) -> Need:
    """``tlx bench``: every runtime stays loaded (they are interleaved). PyTorch frees a
    forward pass's activations on the CPU, but each of the ``arenas`` ONNX Runtime sessions
    keeps its peak in its memory arena; one input batch per batch size."""
    check_image_size(size, option=RUN_SIZE)
    largest = max(batches)
    n = max(runtimes, 1)
    memory = (n + 1) * weights_bytes(num_classes)
    memory += (1 + arenas) * inference_activation_bytes(size, largest)
    memory += sum(batches) * 3 * size * size * F32
    what = f"tlx bench at {size} px, batch {largest}, {n} runtime(s)"
    return Need(what, memory, REPORT_BYTES, folder)


def optimize_need(
    *,
    size: int,
    images: int,
    eval_batch: int,
    num_classes: int,
    files: dict[str, float],
    folder: Path,
) -> Need:
    """``tlx optimize``: the eager model, an export and a quantizer copy of it (each about
    the weights), the evaluation session, the held-out and calibration images; on disk the
    fp32 ONNX it starts from plus each variant (``files``: name → bytes per parameter)."""
    check_image_size(size, option=RUN_SIZE)
    weights = weights_bytes(num_classes)
    memory = 4 * weights + 2 * inference_activation_bytes(size, eval_batch)
    memory += images * 3 * size * size * F32
    disk = weights + sum(weights_bytes(num_classes, bytes_per_param=b) for b in files.values())
    return Need(f"tlx optimize at {size} px", memory, disk + REPORT_BYTES, folder)

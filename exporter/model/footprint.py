"""What VGG16 needs: its weights, its activations, and each command's memory and disk.

The arithmetic follows torchvision's layer list (:func:`~exporter.model.shape.vgg16_layout`,
``cfgs["D"]``); each ``*_need`` function turns it into the :class:`~exporter.core.resources.Need`
a stage passes to :func:`~exporter.core.resources.require` before heavy work. The estimates
are upper bounds with a margin, not predictions: fp32 everywhere (AMP only lowers them), every
activation autograd keeps; ``tests/model/test_footprint.py`` checks them against measured
peaks.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from exporter.core.resources import F32, MIB, Need, check_image_size
from exporter.model.shape import FC_WIDTH, POOL_CELLS, VGGShape, vgg16_layout


def feature_outputs(size: int) -> list[int]:
    """Elements per image of each ``features[i]`` output (conv, ReLU, pool), in order."""
    out, side, channels = [], size, 3
    for item in vgg16_layout():
        if item == "M":
            side //= 2
            out.append(channels * side * side)
        else:
            channels = int(item)
            out += [channels * side * side] * 2  # conv, then its (in-place) ReLU
    return out


def model_params(num_classes: int) -> int:
    """Parameters of VGG16 with a ``num_classes`` head (fc1 is 25088×4096 at any size)."""
    return VGGShape.full(num_classes).parameters()


def trunk_params() -> int:
    """Weights and biases of the 13 convolutions (``features``)."""
    widths = VGGShape.full(1).conv
    return sum(cin * cout * 9 + cout for cin, cout in zip((3, *widths), widths, strict=False))


def _pooled() -> int:
    """``AdaptiveAvgPool2d((7, 7))``'s output per image, whatever the input size."""
    return VGGShape.full(1).conv[-1] * POOL_CELLS


def weights_bytes(num_classes: int, *, bytes_per_param: float = F32) -> int:
    return int(model_params(num_classes) * bytes_per_param)


def inference_activation_bytes(size: int, batch: int) -> int:
    """Peak activation memory of one eager forward pass without autograd: the largest
    input + output pair alive at once, a convolution work buffer as large as the largest
    activation (measured: ~2.9 of them at 128 px), and the input batch."""
    sizes = [3 * size * size, *feature_outputs(size), _pooled(), FC_WIDTH, FC_WIDTH]
    pair = max(a + b for a, b in itertools.pairwise(sizes))
    return batch * F32 * (pair + max(sizes) + sizes[0])


def train_activation_bytes(size: int, batch: int, first_trainable: int | None) -> int:
    """Activation memory of one training step.

    Autograd keeps the input of every layer from the first trainable one on (pools also keep
    int64 indices: two floats each); the backward pass adds the largest gradient pair. With
    the whole trunk frozen (``first_trainable`` None) the trunk runs like inference.
    """
    if first_trainable is None:
        return inference_activation_bytes(size, batch) + batch * F32 * 3 * (_pooled() + FC_WIDTH)
    outs = feature_outputs(size)
    kinds = [k for v in vgg16_layout() for k in (["M"] if v == "M" else ["conv", "relu"])]
    # A ReLU works in place: its output is its conv's output, kept once (as the ReLU's).
    start = max(first_trainable - 1, 0)
    kept = sum(n for n, kind in zip(outs[start:], kinds[start:], strict=True) if kind != "conv")
    kept += sum(
        2 * n
        for i, (n, k) in enumerate(zip(outs, kinds, strict=True))
        if k == "M" and i >= first_trainable
    )
    kept += _pooled() + 2 * FC_WIDTH + 3 * size * size
    return batch * F32 * kept + inference_activation_bytes(size, batch)


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
    trainable = model_params(num_classes) - trunk_params()
    if first_trainable is not None:
        trainable += trunk_params()  # an upper bound: the top blocks hold most of them anyway
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

"""The words commands accept for a device, a precision and a set of runtimes, declared once.

Configs check their fields against these, the CLI builds its option choices from them, and
runtimes declare their devices with them. A new device or precision is one edit here (plus
the code that handles it).
"""

from __future__ import annotations

from exporter.core.errors import UsageError, shown

CPU = "cpu"
CUDA = "cuda"
# The kinds of device a model runs on (verify, bench, serve, predict, the Triton target) and
# that runtimes declare; a command's --device also takes ``cuda:N`` (see :func:`device_kind`).
DEVICES = (CPU, CUDA)
DEVICE_HELP = "cpu, cuda or cuda:N (GPU N)."
AUTO = "auto"
# ``tlx train --device``: auto picks CUDA when present.
TRAIN_DEVICES = (AUTO, *DEVICES)
# Tri-state switches (``--augment``, ``--cache-features``): auto lets the stage decide.
AUTO_ON_OFF = (AUTO, "on", "off")

# Every runtime that can run here (``--runtimes all``), or every model format (``--format all``).
ALL = "all"

# ``tlx export --precision``: fp16 ONNX is the only reduced-precision export (int8 and the
# other variants come from ``tlx optimize``).
EXPORT_PRECISIONS = ("fp32", "fp16")
# ``tlx bench --precision``: the compute dtype the torch runtimes cast to (int8 is a file).
BENCH_PRECISIONS = ("fp32", "fp16", "bf16")


def device_kind(device: str) -> str:
    """The one device rule of every command but train: ``cpu``, ``cuda`` (the current GPU) or
    ``cuda:N`` (GPU N, N a number) → its kind, ``cpu`` or ``cuda``.

    Raises:
        UsageError: anything else, naming ``--device`` (exit 2).
    """
    if device == CPU:
        return CPU
    if device == CUDA or (device.startswith(f"{CUDA}:") and device[5:].isdigit()):
        return CUDA
    raise UsageError(f"--device {shown(device)}: choose cpu or cuda (cuda:N for GPU N)")

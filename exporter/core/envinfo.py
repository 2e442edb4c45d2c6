"""The environment block every report carries: versions, device, CPU, threads."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.core.machine import usable_cpus


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    from exporter.core.machine import machine

    return machine().cpu_model


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit of the tlx source tree, if it is a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def onnxruntime_version() -> str | None:
    return _version("onnxruntime-gpu") or _version("onnxruntime")


def environment(device: str | None = None) -> dict[str, Any]:
    """Versions, device and CPU facts for a report (imports torch: call from command bodies)."""
    import torch

    env: dict[str, Any] = {
        "tlx": __version__,
        "tlx_git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "onnx": _version("onnx"),
        "onnxruntime": onnxruntime_version(),
        "numpy": _version("numpy"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        env.update(
            gpu_name=torch.cuda.get_device_name(idx),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            gpu_driver=_nvidia_driver(),
            gpu_memory_gib=round(torch.cuda.get_device_properties(idx).total_memory / 2**30, 1),
        )
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )

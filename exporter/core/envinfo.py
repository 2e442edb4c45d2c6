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
from exporter.core.machine import machine, usable_cpus


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    return machine().cpu_model


def _first_line(*args: str, timeout: float) -> str | None:
    """The first line a command prints, None when it cannot run, fails or prints nothing."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit of the tlx source tree, if it is a checkout."""
    root = Path(__file__).resolve().parent.parent
    return _first_line("git", "-C", str(root), "rev-parse", "HEAD", timeout=5)


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
            gpu_driver=_first_line(
                "nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", timeout=10
            ),
            gpu_memory_gib=round(torch.cuda.get_device_properties(idx).total_memory / 2**30, 1),
        )
    return env

"""Resumable training state: one ``checkpoint/state.pt`` (safe to read) plus a readable meta.json.

Everything in ``state.pt`` is tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (never retried without it). RNG states of torch, CUDA,
numpy and python are stored so that a resumed CPU run is bitwise identical to an
uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core.errors import InputFileError
from exporter.core.fsio import require_space, write_json, write_with
from exporter.core.runfolder import CHECKPOINT_DIR
from exporter.core.safepath import guard

STATE_NAME = "state.pt"
META_NAME = "meta.json"
CHECKPOINT_FORMAT = 1
# What torch.save adds to the tensors' bytes (zip records, pickled structure), with room.
SERIALIZATION_SLACK = 8 << 20


def capture_rng() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python, in weights_only-safe types."""
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    import torch

    torch.set_rng_state(rng["torch"])
    restore_cuda_rng(rng.get("cuda"))
    n = rng["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))


def restore_rank_rng(state: dict[str, Any], *, rank: int, world_size: int) -> None:
    """This rank's saved RNG when the world size is the same; else rank 0 takes the saved
    single-process stream and the other ranks keep their seeds."""
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == world_size:
        restore_rng(ranks[rank])
    elif rank == 0:
        restore_rng(state["rng"])


def restore_cuda_rng(states: list[Any] | None) -> int:
    """Restore the saved CUDA generators onto the GPUs this machine has; returns how many.

    A checkpoint saved with more GPUs than are visible now (or on a CUDA machine, resumed on
    a CPU one) restores the states that have a device and drops the rest:
    ``set_rng_state_all`` would index past the last device.
    """
    import torch

    if not states or not torch.cuda.is_available():
        return 0
    n = min(len(states), torch.cuda.device_count())
    for index in range(n):
        torch.cuda.set_rng_state(states[index], index)
    return n


def restore_scaler(scaler: Any, state: dict[str, Any] | None) -> bool:
    """Load a saved GradScaler state when there is one and the scaler is in use.

    A CPU or bf16 run saves a disabled scaler's empty state (``{}``), which an enabled one
    (fp16 on CUDA after a resume across devices) refuses to load: it then starts fresh, as
    a new fp16 run would. Returns whether a state was loaded.
    """
    if not state or not scaler.is_enabled():
        return False
    scaler.load_state_dict(state)
    return True


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def save_checkpoint(run_dir: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Atomically write ``checkpoint/state.pt`` then ``checkpoint/meta.json``.

    ``state.pt`` alone is the source of truth; meta.json is a human-readable summary.
    """
    import torch

    folder = guard(checkpoint_dir(run_dir))  # RUN/checkpoint may not lead elsewhere
    folder.mkdir(parents=True, exist_ok=True)
    # torch's zip writer can abort the process on a short write: the space is checked first.
    write_tensors(folder / STATE_NAME, {"format": CHECKPOINT_FORMAT, **state}, torch.save)
    write_json(folder / META_NAME, meta)


def write_tensors(dest: Path, payload: Any, save: Callable[[Any, Path], None]) -> None:
    """``save(payload, tmp)`` atomically into ``dest``, refused (disk full) before a byte is
    written when the disk cannot hold the payload's tensors."""
    needed = tensor_bytes(payload) + SERIALIZATION_SLACK

    def write(tmp: Path) -> None:
        require_space(tmp.parent, needed)
        save(payload, tmp)

    write_with(dest, write, size_hint=needed)


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nest of dicts, lists and tuples (what a save writes)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``checkpoint/state.pt`` with ``weights_only=True``.

    Raises:
        InputFileError: no checkpoint, or it cannot be read safely.
        UnsafePath: ``checkpoint/`` or ``state.pt`` is a symbolic link (a resume would write
            through it): refused before reading.
    """
    path = guard(checkpoint_dir(run_dir) / STATE_NAME, root=run_dir)
    if not path.is_file():
        raise InputFileError(
            f"--resume {run_dir}: {path} not found (resume needs a run folder made by "
            "`tlx train` that saved a checkpoint)"
        )
    return read_state(path, fmt=CHECKPOINT_FORMAT, what="tlx checkpoint")


def read_state(path: Path, *, fmt: str, what: str) -> dict[str, Any]:
    """Read a resumable state file with ``weights_only=True``; its ``format`` must be ``fmt``.

    Raises:
        InputFileError: unreadable (never retried unsafely) or not a ``what``.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted file: any failure is bad input, never a retry
        raise InputFileError(f"cannot read checkpoint {path}: {str(exc)[:300]}") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise InputFileError(f"{path} is not a {what} (format {fmt})")
    return state

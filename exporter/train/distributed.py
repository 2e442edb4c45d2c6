"""Training on several processes: torchrun's environment, the process group, DDP wrapping.

tlx does not launch processes itself: torchrun (``torch.distributed.run``, PyTorch's elastic
agent) starts one worker per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT`` and ``TORCHELASTIC_RESTART_COUNT``; each worker joins the
process group here (NCCL on CUDA, gloo on CPU). Without those variables, or with a world of
one, every helper below is a no-op and training runs exactly as a plain single process.

Collectives use tensors on the backend's own device: torchvision's
``reduce_across_processes`` builds a CUDA tensor, which gloo cannot reduce.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.core.errors import EnvironmentUnavailable, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DistContext", "init_distributed", "restart_count", "shard_range"]

# Set by torchrun in every worker: how often the agent restarted the group (--max-restarts).
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"


def restart_count() -> int:
    """How many times torchrun restarted this worker group (0 outside torchrun)."""
    try:
        return int(os.environ.get(RESTART_ENV, "0"))
    except ValueError:
        return 0


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items that ``rank`` owns (no padding).

    Shards differ in size by at most one item and a rank may own none (``n < world_size``),
    so counts summed over ranks are exact: nothing is duplicated to even them out.
    """
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


@dataclass
class DistContext:
    """This process's place in the job; a world of one is the single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: Any = None  # torch.device this rank trains on
    _joined: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int, per_rank_images_per_s: list[float]) -> dict[str, Any]:
        """The ``distributed`` block of train.json: the world, each rank's share of the global
        batch and its training images/s."""
        return {
            "world_size": self.world_size,
            "backend": self.backend,
            "launcher": "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else None,
            "restart_count": restart_count(),
            "nnodes": int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1) if self.enabled else 1,
            "global_batch_size": batch_size,
            "per_rank_batch_size": batch_size // self.world_size,
            "per_rank_images_per_s": per_rank_images_per_s,
        }

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Each node's first rank goes first (downloads, decoding checks), the others after."""
        if self.enabled and self.local_rank != 0:
            self.barrier()
        try:
            yield
        finally:
            if self.enabled and self.local_rank == 0:
                self.barrier()

    def _comm_device(self) -> str:
        return str(self.device) if self.backend == "nccl" else "cpu"

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks (float64 or int64 arrays keep their dtype)."""
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(values)).to(self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (small, picklable values only)."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_gather_rows(self, local: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Each rank's ``local`` rows (``counts[r]`` of them), padded to one size for the wire."""
        import torch
        import torch.distributed as dist

        if not self.enabled:
            return [local]
        size = max(counts)
        pad = torch.zeros((size, *local.shape[1:]), dtype=local.dtype)
        pad[: len(local)] = local
        pad = pad.to(self._comm_device())
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(parts, pad)
        return [p[:c].cpu() for p, c in zip(parts, counts, strict=True)]

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (identity in a world of one).

        Only parameters with ``requires_grad`` at this moment join DDP's reducer, which is
        why the loop freezes *before* wrapping and wraps again when phase 2 unfreezes part
        of the trunk (flipping ``requires_grad`` under a live DDP fails with "Expected to
        have finished reduction"). Every trainable parameter is used in every step, so
        ``find_unused_parameters`` stays off.
        """
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            module,
            device_ids=device_ids,
            gradient_as_bucket_view=True,  # grads live in DDP's buckets: no second copy
        )

    def close(self) -> None:
        if self._joined:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._joined = False


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise EnvironmentUnavailable(
            f"environment variable {name}={raw!r} is not an integer"
        ) from None


def init_distributed(device_spec: str, batch_size: int) -> DistContext:
    """Join torchrun's process group if this process is one of several workers; a CUDA rank
    (``device_spec`` is ``--device``) trains on ``cuda:LOCAL_RANK``.

    Raises:
        UsageError: the batch does not divide by the world size.
        EnvironmentUnavailable: CUDA asked for but absent, or fewer GPUs than local ranks.
    """
    import torch

    from exporter.train.common import resolve_device

    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_spec)
    if world <= 1:
        return DistContext(device=device)
    if batch_size % world:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must divide by the number of "
            f"processes ({world}); e.g. --batch-size {batch_size - batch_size % world or world}"
        )
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise EnvironmentUnavailable(
                f"local rank {local} has no GPU (this node has {torch.cuda.device_count()}); "
                "start at most one process per GPU (--nproc)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    import torch.distributed as dist

    dist.init_process_group(
        backend=backend,
        store=_attempt_store(world),
        rank=rank,
        world_size=world,
        device_id=device if backend == "nccl" else None,
    )
    return DistContext(rank, world, local, backend, device, _joined=True)


def _attempt_store(world: int) -> Any:
    """After a torchrun restart: the agent's store under a prefix of this attempt.

    The elastic agent keeps serving one store across restarts, so the addresses the previous
    attempt's processes published are still in it; a restarted rank that reads one before
    its peer overwrote it connects to a dead port ("Gloo connectFullMesh failed ... Connection
    refused"). A fresh prefix per attempt leaves nothing stale to read.
    """
    attempt = restart_count()
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # init_process_group's own env:// rendezvous
    from datetime import timedelta

    import torch.distributed as dist

    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=False,
        timeout=timedelta(minutes=10),
    )
    return dist.PrefixStore(f"tlx/attempt_{attempt}", base)

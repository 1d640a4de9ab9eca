"""torch.distributed for ``torchrun ... -m nnseg train|predict|preprocess``: ranks, rank-0 duties, reductions.

torchrun tells each process its rank through its own launch protocol (RANK, WORLD_SIZE,
LOCAL_RANK); nnseg reads nothing else. Without torchrun, training is a single process.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nnseg.errors import NnsegError


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as torch understands it, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NnsegError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise NnsegError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise NnsegError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_launcher(cls, device_type: str) -> DistributedContext:
        """Join the process group when started by torchrun; a single-process context otherwise."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
        )

    def local_device(self, device: torch.device) -> torch.device:
        """This process's device: under torchrun every CUDA device means the rank's own GPU (``cuda:LOCAL_RANK``,
        made current); anything else unchanged."""
        if not self.enabled or device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (in place on a copy); identity when single-process."""
        if not self.enabled:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (decisions such as a fitted number of epochs must agree)."""
        if not self.enabled:
            return value
        return int(self.sum(torch.tensor(float(value) if self.is_main else 0.0)).item())

    def gather(self, value: object) -> list[object]:
        """Every rank's ``value`` (a picklable object), in rank order, on rank 0; ``[value]`` elsewhere."""
        if not self.enabled:
            return [value]
        gathered: list[object] = [None] * self.world_size if self.is_main else []
        dist.gather_object(value, gathered if self.is_main else None, dst=0)
        return gathered if self.is_main else [value]

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

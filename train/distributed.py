"""Data-parallel training under `torchrun`: process group setup, DDP wrapping, global-batch gathering.

Every rank computes the same global batch indices, encodes its contiguous slice, and all-gathers the
embeddings (differentiably) so that the loss — including in-batch negatives — is the global-batch loss.
Gradient check: each rank's loss L is identical, the all-gather backward sums W copies of ∂L/∂e_r into
rank r, and DDP's all-reduce averages over W ranks, so every rank ends with Σ_r ∂L/∂θ|_{e_r} = ∂L/∂θ —
the single-process gradient of the same global batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn

from hlm_engine.models.packing import PackedBatch


def setup() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_slice(n: int) -> slice:
    """This rank's contiguous part of a global batch of n (n must divide evenly, checked at start)."""
    w, r = world_size(), rank()
    if n % w:
        raise ValueError(f"global batch {n} is not divisible by the world size {w}")
    return slice(r * n // w, (r + 1) * n // w)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order, keeping the autograd path to the local rows."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather
    return torch.cat(all_gather(x.contiguous()), dim=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


class Tower(nn.Module):
    """The encoder's differentiable forward as an nn.Module, so DDP can wrap it (one forward per step)."""

    def __init__(self, encoder):
        super().__init__()
        self.model = encoder.model
        self._encoder = encoder

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self._encoder.embed_batch(batch, normalize=True)


def wrap(encoder) -> nn.Module:
    tower = Tower(encoder)
    if not is_distributed():
        return tower
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(tower)

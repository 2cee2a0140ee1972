"""Unpadded batches: token ids concatenated, `cu_seqlens` marking where each text starts.

The native format of every forward (as in flash-attention varlen and TEI); padding exists only as an
adapter inside the PyTorch reference attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    input_ids: torch.Tensor    # [T] int64
    cu_seqlens: torch.Tensor   # [B+1] int32
    positions: torch.Tensor    # [T] int64, position of each token within its own text
    max_seqlen: int

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def to(self, device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.cu_seqlens.to(device), self.positions.to(device),
                           self.max_seqlen)


def pack(ids_list: list[list[int]], device=None) -> PackedBatch:
    if not ids_list:
        raise ValueError("cannot pack an empty batch")
    lens = [len(x) for x in ids_list]
    if min(lens) < 1:
        raise ValueError("every sequence needs at least one token")
    flat = [t for ids in ids_list for t in ids]
    input_ids = torch.tensor(flat, dtype=torch.int64)
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    positions = torch.cat([torch.arange(n, dtype=torch.int64) for n in lens]) if len(lens) > 1 \
        else torch.arange(lens[0], dtype=torch.int64)
    b = PackedBatch(input_ids, cu, positions, max(lens))
    return b.to(device) if device is not None else b

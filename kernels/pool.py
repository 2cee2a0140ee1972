"""Sequence pooling over packed tokens, then Matryoshka truncation and L2 normalisation.

hidden [T, H], cu_seqlens [B+1] -> [B, dim or H]:
    mean: sum of the sequence's tokens / length;  cls: its first token;  last: its last token (EOS)
    then keep the first `dim` features (Matryoshka) and, if `normalize`, divide by the L2 norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("mean", "cls", "last")


def truncate_normalize(x, dim=None, normalize=True):
    if dim is not None:
        x = x[:, :dim]
    return F.normalize(x.float(), dim=-1).to(x.dtype) if normalize else x


def pool_ref(hidden, cu_seqlens, mode, dim=None, normalize=True):
    if mode not in MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; supported: {', '.join(MODES)}")
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    if mode == "cls":
        out = hidden[starts]
    elif mode == "last":
        out = hidden[ends - 1]
    else:
        B = starts.numel()
        lens = ends - starts
        seg = torch.repeat_interleave(torch.arange(B, device=hidden.device), lens, output_size=hidden.shape[0])
        acc = torch.zeros(B, hidden.shape[1], dtype=torch.float32, device=hidden.device)
        acc.index_add_(0, seg, hidden.float())
        out = (acc / lens[:, None].float()).to(hidden.dtype)
    return truncate_normalize(out, dim, normalize)

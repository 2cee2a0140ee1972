"""Variable-length (packed) multi-head attention, forward only.

Inputs are unpadded: q [T, Hq, D], k/v [T, Hkv, D] with `cu_seqlens` [B+1] (int32, cumulative
sequence starts, cu_seqlens[-1] == T). Hkv divides Hq (GQA/MQA: query head h reads kv head h // (Hq/Hkv)).
`bias` is an optional additive score bias [Hq, max_seqlen, max_seqlen] indexed by the positions *within*
each sequence (MPNet's relative-position bias depends only on (i, j), so one tensor serves every sequence).

    out[t, h] = softmax_j(scale * q[t, h] . k[j, h'] + bias[h, i, j] + mask) @ v[j, h']
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def seq_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence id, position within its sequence) of every packed token, both int64 [T]."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq_id = torch.repeat_interleave(torch.arange(lens.numel(), device=cu_seqlens.device), lens,
                                     output_size=total)
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq_id]
    return seq_id, pos


def varlen_attention_ref(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None,
                         upcast=False):
    """PyTorch reference. Pads to [B, H, L, D] (padding is an adapter here), runs SDPA, unpads."""
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    scale = D ** -0.5 if scale is None else scale
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
        bias = bias.float() if bias is not None else None
    B = cu_seqlens.numel() - 1
    L = int(max_seqlen)
    gqa = Hkv != Hq
    if B == 1:  # no padding needed: one sequence fills the batch
        qb, kb, vb = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        mask = None
        if bias is not None:
            mask = bias[:, :T, :T].unsqueeze(0).to(qb.dtype)
            if causal:
                mask = mask.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), float("-inf"))
            out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=causal, scale=scale, enable_gqa=gqa)
        return out[0].transpose(0, 1).to(dtype)
    seq_id, pos = seq_index(cu_seqlens, T)

    def pad(t):
        p = t.new_zeros(B, L, t.shape[1], D)
        p[seq_id, pos] = t
        return p.transpose(1, 2)  # [B, H, L, D]

    qb, kb, vb = pad(q), pad(k), pad(v)
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    ar = torch.arange(L, device=q.device)
    allowed = (ar[None, :] < lens[:, None])[:, None, None, :]  # [B, 1, 1, L] valid keys
    if causal:
        allowed = allowed & (ar[None, :] <= ar[:, None])[None, None]
    if bias is not None:
        mask = bias[:, :L, :L].unsqueeze(0).to(qb.dtype).masked_fill(~allowed, float("-inf"))
    else:
        mask = allowed
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)[seq_id, pos].to(dtype)

"""Variable-length (packed) multi-head attention, forward only.

Inputs are unpadded: q [T, Hq, D], k/v [T, Hkv, D] with `cu_seqlens` [B+1] (int32, cumulative
sequence starts, cu_seqlens[-1] == T). Hkv divides Hq (GQA/MQA: query head h reads kv head h // (Hq/Hkv)).
`bias` is an optional additive score bias [Hq, max_seqlen, max_seqlen] indexed by the positions *within*
each sequence (MPNet's relative-position bias depends only on (i, j), so one tensor serves every sequence).

    out[t, h] = softmax_j(scale * q[t, h] . k[j, h'] + bias[h, i, j] + mask) @ v[j, h']
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, pow2_floor


_MAX_MASK_ELEMS = 1 << 24  # 64 MB of fp32 mask per reference-attention call
_SHORT_L = 32  # padded batches up to this length take the explicit-softmax path on CPU
_BUCKET_MIN_L = 16  # on CPU, longer mixed-length batches run per length group (_length_buckets)


def seq_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence id, position within its sequence) of every packed token, both int64 [T]."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq_id = torch.repeat_interleave(torch.arange(lens.numel(), device=cu_seqlens.device), lens,
                                     output_size=total)
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq_id]
    return seq_id, pos


def _length_buckets(lens: list[int]) -> list[list[int]]:
    """Sequence indices grouped by padded length class (<= 16, then each power of two), when padding every
    sequence to the batch's longest would cost > 1.5x the scores of padding each group to its own longest."""
    groups: dict[int, list[int]] = {}
    for b, n in enumerate(lens):
        groups.setdefault(max(_BUCKET_MIN_L, 1 << (int(n) - 1).bit_length()), []).append(b)
    if len(groups) < 2:
        return []
    bucketed = sum(len(g) * max(lens[b] for b in g) ** 2 for g in groups.values())
    return list(groups.values()) if len(lens) * max(lens) ** 2 > 1.5 * bucketed else []


@dataclass(frozen=True)
class _PadGroup:
    src: torch.Tensor    # int64 [B_g * L_g]: the packed row each padded slot reads
    lens: torch.Tensor   # int64 [B_g]
    width: int           # L_g


@functools.lru_cache(maxsize=16)
def _pad_plan(lens: tuple[int, ...], bucket: bool) -> tuple[tuple[_PadGroup, ...], torch.Tensor]:
    """How the CPU reference pads a packed batch: per group (one, or one per length class when `bucket`
    and `_length_buckets` finds it pays) the packed rows that fill [B_g, L_g], and `back` [T], each token's
    row in the groups' padded outputs laid end to end. Why gathers: the padding and unpadding were
    index_put / advanced-index writes, whose accumulating backward was ~10% of a MiniLM alignment step; row
    gathers (index_select, backward index_add) are a fraction of that, and the plan is built once per
    batch shape, not once per layer (lru_cache: every layer of a forward passes the same lengths).
    A padded slot reads its sequence's last token instead of a zero row: masked keys get exactly zero
    weight and padded query rows are never read back, so outputs and gradients are unchanged."""
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    groups = _length_buckets(list(lens)) if bucket else []
    groups = groups or [list(range(len(lens)))]
    plan, back, offset = [], torch.empty(starts[-1], dtype=torch.long), 0
    for g in groups:
        width = max(lens[b] for b in g)
        ar = torch.arange(width)
        glens = torch.tensor([lens[b] for b in g], dtype=torch.long)
        gstart = torch.tensor([starts[b] for b in g], dtype=torch.long)
        src = (gstart[:, None] + torch.minimum(ar[None, :], glens[:, None] - 1)).reshape(-1)
        real = ar[None, :] < glens[:, None]  # [B_g, L_g]: the slots holding a token
        back[(gstart[:, None] + ar)[real]] = offset + torch.arange(len(g) * width).view(len(g), width)[real]
        plan.append(_PadGroup(src, glens, width))
        offset += len(g) * width
    return tuple(plan), back


def _mask(lens: torch.Tensor, L: int, causal: bool, bias, dtype):
    """[B, 1|H, L, L] attention mask of a padded batch: bool (valid keys, causal) or the bias with -inf."""
    ar = torch.arange(L, device=lens.device)
    allowed = (ar[None, :] < lens[:, None])[:, None, None, :]  # [B, 1, 1, L] valid keys
    if causal:
        allowed = allowed & (ar[None, :] <= ar[:, None])[None, None]
    if bias is None:
        return allowed
    return bias[:, :L, :L].unsqueeze(0).to(dtype).masked_fill(~allowed, float("-inf"))


def _padded_ref(q, k, v, g: _PadGroup, causal, scale, bias, gqa):
    """One padded group [B_g, H, L_g, D] through SDPA (or the explicit softmax for short batches)."""
    num = g.lens.numel()
    qb, kb, vb = (t.index_select(0, g.src).view(num, g.width, t.shape[1], t.shape[2]).transpose(1, 2)
                  for t in (q, k, v))
    L = g.width
    mask = _mask(g.lens, L, causal, bias, qb.dtype)
    if L <= _SHORT_L and not gqa:
        # Batches of short queries (the serving case): ATen's CPU flash kernel tiles for long sequences and
        # is ~1.5x slower than two batched GEMMs + softmax at L <= 32 (bench: B=64, H=12, L=12, 1 thread).
        s = torch.matmul(qb, kb.transpose(-1, -2)).mul_(scale)
        s = s.add_(mask) if mask.dtype != torch.bool else s.masked_fill_(~mask, float("-inf"))
        out = torch.matmul(s.softmax(-1), vb)
    else:
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2).reshape(num * L, qb.shape[1], qb.shape[3])


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
    if bias is not None and B * Hq * L * L > _MAX_MASK_ELEMS and B > 1:
        # A biased mask is materialised per sequence ([B, H, L, L]); bound its memory for long texts
        # (MPNet at L=384 would need ~450 MB per layer at B=64) by running sub-batches.
        step = max(1, _MAX_MASK_ELEMS // (Hq * L * L))
        outs = []
        for b0 in range(0, B, step):
            b1 = min(B, b0 + step)
            s0, s1 = int(cu_seqlens[b0]), int(cu_seqlens[b1])
            sub_cu = cu_seqlens[b0: b1 + 1] - cu_seqlens[b0]
            sub_L = int((sub_cu[1:] - sub_cu[:-1]).max())
            outs.append(varlen_attention_ref(q[s0:s1], k[s0:s1], v[s0:s1], sub_cu, sub_L, causal, scale, bias))
        return torch.cat(outs).to(dtype)
    if q.device.type == "cpu":
        groups, back = _pad_plan(tuple((cu_seqlens[1:] - cu_seqlens[:-1]).tolist()), L > _BUCKET_MIN_L)
        outs = [_padded_ref(q, k, v, g, causal, scale, bias, gqa) for g in groups]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)).index_select(0, back).to(dtype)
    seq_id, pos = seq_index(cu_seqlens, T)

    def pad(t):
        p = t.new_zeros(B, L, t.shape[1], D)
        p[seq_id, pos] = t
        return p.transpose(1, 2)  # [B, H, L, D]

    qb, kb, vb = pad(q), pad(k), pad(v)
    mask = _mask((cu_seqlens[1:] - cu_seqlens[:-1]).long(), L, causal, bias, qb.dtype)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)[seq_id, pos].to(dtype)


# --------------------------------------------------------------------------------------------- Triton
# FlashAttention-2 forward (Dao 2023, arXiv:2307.08691) on packed sequences: one program per
# (query block, q head, sequence). The program streams the sequence's keys in BLOCK_N tiles and keeps the
# online-softmax state (running max m, running sum l, unnormalised output acc) in fp32 registers, so the
# [L, L] score matrix never touches HBM. Scores are kept in base 2 (s * log2(e)) so exp is a single exp2.
LOG2E = 1.4426950408889634


@triton.jit
def _varlen_attention_fwd_kernel(q_ptr, k_ptr, v_ptr, out_ptr, bias_ptr, cu_ptr, qk_scale,
                                 stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                                 stride_ot, stride_oh, stride_bh, stride_bi, stride_bj, D,
                                 GROUP: tl.constexpr, CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                                 DOT_PRECISION: tl.constexpr):
    start_m = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    seq_start = tl.load(cu_ptr + seq).to(tl.int64)
    seq_len = (tl.load(cu_ptr + seq + 1) - tl.load(cu_ptr + seq)).to(tl.int32)
    if start_m * BLOCK_M >= seq_len:  # the grid is sized for max_seqlen; shorter sequences stop here
        return
    kv_head = head // GROUP  # GQA/MQA: GROUP consecutive q heads share one kv head

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < seq_len
    mask_d = offs_d < D  # head_dim padded to a power of two
    rows = seq_start + offs_m.to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # Causal: keys past this block's last query are never needed.
    hi = tl.minimum(seq_len, (start_m + 1) * BLOCK_M) if CAUSAL else seq_len
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        mask_n = offs_n < seq_len
        cols = seq_start + offs_n.to(tl.int64)
        k = tl.load(k_ptr + cols[None, :] * stride_kt + kv_head * stride_kh + offs_d[:, None],
                    mask=mask_n[None, :] & mask_d[:, None], other=0.0)                    # [BLOCK_D, BLOCK_N]
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale                       # log2-scaled scores
        if HAS_BIAS:
            b = tl.load(bias_ptr + head * stride_bh + offs_m[:, None].to(tl.int64) * stride_bi
                        + offs_n[None, :] * stride_bj, mask=mask_m[:, None] & mask_n[None, :], other=0.0)
            s += b.to(tl.float32) * 1.4426950408889634
        valid = mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(valid, s, float("-inf"))
        # Key 0 is valid for every row (causal or not), so m_new is finite from the first tile on and
        # exp2(m_i - m_new) never sees (-inf) - (-inf).
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + cols[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :],
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)                    # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


# Short sequences (padded length LP <= SHORT_MAX_L, the serving case): one program takes HP heads of one
# sequence at once - the whole GQA group and as many groups as fit - so a query of 8 tokens is 1-2 programs,
# not one per head, and K/V of a kv head are read once for its whole group (the FlashInfer / flash-decoding
# GQA packing). Rows are (q head, token) pairs, columns (kv head, key) pairs; a q head sees only its own kv
# head's keys (block-diagonal mask), so S = Q K^T over the program's heads is one MMA tile and the softmax
# is exact in one pass (no online rescaling). The off-diagonal blocks cost KVP x the MMA work of the
# diagonal ones, which at these sizes is free next to a second launch or a second pass over K/V.
SHORT_MAX_L = 32
SHORT_TILE = 4096  # elements of the fp32 [BLOCK_R, BLOCK_C] score tile (32 registers a thread at 4 warps)


@triton.jit
def _attention_short_fwd_kernel(q_ptr, k_ptr, v_ptr, out_ptr, bias_ptr, cu_ptr, qk_scale, Hq, Hkv,
                                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                                stride_ot, stride_oh, stride_bh, stride_bi, stride_bj, D,
                                GROUP: tl.constexpr, HP: tl.constexpr, LP: tl.constexpr, CAUSAL: tl.constexpr,
                                HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                                BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    chunk = tl.program_id(0)
    seq = tl.program_id(1)
    seq_start = tl.load(cu_ptr + seq).to(tl.int64)
    seq_len = tl.load(cu_ptr + seq + 1) - tl.load(cu_ptr + seq)
    r = tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    h_loc, t = r // LP, r % LP                     # row = (q head, token)
    g_loc, j = c // LP, c % LP                     # column = (kv head, key)
    head = chunk * HP + h_loc
    kv = chunk * (HP // GROUP) + g_loc
    row_ok = (h_loc < HP) & (head < Hq) & (t < seq_len)
    col_ok = (g_loc < HP // GROUP) & (kv < Hkv) & (j < seq_len)
    mask_d = offs_d < D
    q = tl.load(q_ptr + (seq_start + t)[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & mask_d[None, :], other=0.0)                        # [BLOCK_R, BLOCK_D]
    k = tl.load(k_ptr + (seq_start + j)[None, :] * stride_kt + kv[None, :] * stride_kh + offs_d[:, None],
                mask=col_ok[None, :] & mask_d[:, None], other=0.0)                        # [BLOCK_D, BLOCK_C]
    s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale                           # log2-scaled scores
    valid = row_ok[:, None] & col_ok[None, :] & ((h_loc // GROUP)[:, None] == g_loc[None, :])
    if CAUSAL:
        valid = valid & (j[None, :] <= t[:, None])
    if HAS_BIAS:
        b = tl.load(bias_ptr + head[:, None].to(tl.int64) * stride_bh + t[:, None] * stride_bi
                    + j[None, :] * stride_bj, mask=valid, other=0.0)
        s += b.to(tl.float32) * 1.4426950408889634
    s = tl.where(valid, s, float("-inf"))
    m = tl.max(s, axis=1)
    m = tl.where(row_ok, m, 0.0)                   # padding rows: all -inf, keep exp2 finite (stored nowhere)
    p = tl.exp2(s - m[:, None])
    l = tl.sum(p, axis=1)
    v = tl.load(v_ptr + (seq_start + j)[:, None] * stride_vt + kv[:, None] * stride_vh + offs_d[None, :],
                mask=col_ok[:, None] & mask_d[None, :], other=0.0)                        # [BLOCK_C, BLOCK_D]
    out = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / tl.where(row_ok, l, 1.0)[:, None]
    tl.store(out_ptr + (seq_start + t)[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & mask_d[None, :])


def short_heads(max_seqlen: int, num_heads: int, group: int, tile: int = SHORT_TILE) -> int:
    """q heads per program on the short path (0: the path does not apply). A power-of-two multiple of the GQA
    group, as many as the score tile holds: [HP * LP, HP / GROUP * LP] <= tile elements."""
    lp = triton.next_power_of_2(max(1, max_seqlen))
    if lp > SHORT_MAX_L or group & (group - 1):
        return 0
    hp = min(triton.next_power_of_2(num_heads), pow2_floor(int((tile * group) ** 0.5) // lp))
    return hp if hp >= group else 0


def _blocks(max_seqlen: int, head_dim: int, dtype: torch.dtype, has_bias: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the streaming path: tiles no larger than the longest
    sequence, capped where the fp32 [BLOCK_M, D] accumulator, the [BLOCK_M, BLOCK_N] scores and (MPNet) the
    bias tile stay in registers. Caps read off the compile gate (bench/gpu_static.py): a 128-row tile with the
    bias spilled at head_dim 64 (255 registers); fp32 operands take twice the registers of 16-bit ones."""
    n = triton.next_power_of_2(max(1, max_seqlen))
    cap_m = 128 if head_dim <= 64 and not has_bias else 64
    cap_n = 64
    if dtype == torch.float32:
        cap_m, cap_n = (32, 32) if head_dim <= 64 else (16, 16)
    block_m = min(cap_m, max(16, n))
    block_n = min(cap_n, max(16, n))
    num_warps = max(1, min(8, block_m * triton.next_power_of_2(head_dim) // 1024))
    if dtype == torch.float32:  # FMA dots keep their operands in registers: 1 warp spilled at 32 x 32
        num_warps = max(num_warps, 4)
    if has_bias:  # the bias tile is a third [BLOCK_M, BLOCK_N] fp32 tile: 4 warps hit 255 registers on sm_80
        num_warps = min(8, 2 * num_warps)
    return block_m, block_n, num_warps, 2


def _grid(max_seqlen: int, block_m: int, num_heads: int, num_seqs: int):
    return (triton.cdiv(max_seqlen, block_m), num_heads, num_seqs)


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None):
    """Triton launcher: q [T, Hq, D], k/v [T, Hkv, D] (unit stride on D), cu_seqlens [B+1] int32,
    bias [Hq, >=max_seqlen, >=max_seqlen] or None -> out [T, Hq, D] contiguous.

    Programs: short sequences (<= SHORT_MAX_L) run cdiv(Hq, HP) programs per sequence, so a single 8-token
    query launches 1-2 programs, not >= 1 per SM: its whole attention is ~20 KB of q/k/v and ~0.1 MFLOP,
    less work than one more wave of programs costs to schedule; batches fill the GPU through B."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"varlen_attention: q/k/v must be [T, H, D]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    T, Hq, D = q.shape
    if k.shape != v.shape or k.shape[0] != T or k.shape[2] != D:
        raise ValueError(f"varlen_attention: k {tuple(k.shape)} and v {tuple(v.shape)} must both be [{T}, Hkv, {D}]")
    Hkv = k.shape[1]
    if Hq % Hkv:
        raise ValueError(f"varlen_attention: {Hkv} kv heads must divide {Hq} q heads")
    if not 16 <= D <= 256:
        raise ValueError(f"varlen_attention: head_dim {D} outside the supported 16..256")
    if cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"varlen_attention: cu_seqlens must be a 1-D int32 tensor, got "
                         f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    max_seqlen = int(max_seqlen)
    if bias is not None and (bias.dim() != 3 or bias.shape[0] != Hq or bias.shape[1] < max_seqlen
                             or bias.shape[2] < max_seqlen):
        raise ValueError(f"varlen_attention: bias {tuple(bias.shape)} must be [{Hq}, >={max_seqlen}, >={max_seqlen}]")
    check_tensors("varlen_attention", q=q, k=k, v=v, cu_seqlens=cu_seqlens, bias=bias)
    check_dtype("varlen_attention", "q", q)
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"varlen_attention: q/k/v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty((T, Hq, D), dtype=q.dtype, device=q.device)
    B = cu_seqlens.numel() - 1
    if T == 0 or B == 0:
        return out
    scale = D ** -0.5 if scale is None else float(scale)
    # fp32 inputs: full-precision dots (the default TF32 would cost ~3 decimal digits against the reference).
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    cu = cu_seqlens.to(torch.int32).contiguous()
    bias_strides = bias.stride() if bias is not None else (0, 0, 0)
    args = (q, k, v, out, bias if bias is not None else q, cu, scale * LOG2E)
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0),
               out.stride(1), *bias_strides, D)
    group, block_d = Hq // Hkv, triton.next_power_of_2(D)
    # fp32 (FMA dots, operands in registers): a quarter of the score tile; at head_dim 128 the streaming path.
    fp32 = q.dtype == torch.float32
    hp = short_heads(max_seqlen, Hq, group, SHORT_TILE // 4 if fp32 else SHORT_TILE) if not fp32 or D <= 64 else 0
    if hp:
        lp = triton.next_power_of_2(max_seqlen)
        block_r, block_c = max(16, hp * lp), max(16, hp // group * lp)
        chunks = triton.cdiv(Hq, hp)
        launch(_attention_short_fwd_kernel, (chunks, B), *args, Hq, Hkv, *strides, GROUP=group, HP=hp, LP=lp,
               CAUSAL=bool(causal), HAS_BIAS=bias is not None, BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_D=block_d,
               DOT_PRECISION=precision, num_warps=4, num_stages=1, path="short", rows=T * Hq, tile_rows=block_r)
        return out
    block_m, block_n, num_warps, num_stages = _blocks(max_seqlen, D, q.dtype, bias is not None)
    launch(_varlen_attention_fwd_kernel, _grid(max_seqlen, block_m, Hq, B), *args, *strides, GROUP=group,
           CAUSAL=bool(causal), HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
           DOT_PRECISION=precision, num_warps=num_warps, num_stages=num_stages, path="flash",
           rows=T * Hq, tile_rows=block_m)
    return out

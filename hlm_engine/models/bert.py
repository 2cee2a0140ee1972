"""Post-LayerNorm bidirectional encoders: BERT (MiniLM) and MPNet (the default teacher).

Per layer (fused QKV, as one GEMM):
    qkv = x Wqkv^T + b;  a = attention(q, k, v [+ MPNet relative bias]);  x = LN(a Wo^T + bo + x)
    x = LN(gelu(x W1^T + b1) W2^T + b2 + x)
BERT embeddings: word + absolute position + token type 0, LayerNorm. MPNet: word + position
(offset by padding_idx + 1), LayerNorm, and a bucketed relative-position bias shared by all layers.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from hlm_engine import ops
from hlm_engine.config import EncoderConfig

from .packing import PackedBatch


class _LayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))


class PostNormLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig, intermediate: int):
        super().__init__()
        H = cfg.hidden_size
        self.qkv = nn.Linear(H, 3 * H)
        self.o = nn.Linear(H, H)
        self.attn_norm = _LayerNorm(H)
        self.up = nn.Linear(H, intermediate)
        self.down = nn.Linear(intermediate, H)
        self.ffn_norm = _LayerNorm(H)


class _Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        if cfg.type_vocab_size:
            self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = _LayerNorm(cfg.hidden_size)


def relative_position_bucket(rel: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """MPNet/T5 bidirectional bucketing of (key pos - query pos): exact up to num_buckets/4, log beyond."""
    n = -rel
    half = num_buckets // 2
    ret = (n < 0).long() * half
    n = n.abs()
    max_exact = half // 2
    large = max_exact + (torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
                         * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return ret + torch.where(n < max_exact, n, large)


class PostNormEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, backend: str = "torch"):
        super().__init__()
        self.cfg = cfg
        self.ops = ops.get(backend)   # chosen once, carried by the model
        self.backend = self.ops.name
        self.embed = _Embeddings(cfg)
        self.layers = nn.ModuleList(PostNormLayer(cfg, i) for i in cfg.intermediate_sizes)
        if cfg.relative_attention_num_buckets:
            self.rel_bias = nn.Embedding(cfg.relative_attention_num_buckets, cfg.num_heads)
        if cfg.output_dim:
            self.proj = nn.Linear(cfg.hidden_size, cfg.output_dim)

    def attention_bias(self, L: int, device) -> torch.Tensor | None:
        """[Hq, L, L] relative-position bias (MPNet) or None."""
        if not self.cfg.relative_attention_num_buckets:
            return None
        ar = torch.arange(L, device=device)
        buckets = relative_position_bucket(ar[None, :] - ar[:, None], self.cfg.relative_attention_num_buckets,
                                           self.cfg.relative_attention_max_distance)
        return self.rel_bias(buckets).permute(2, 0, 1).contiguous()

    def forward(self, batch: PackedBatch, skip_layers=(), tap=None, start=None, stop=None) -> torch.Tensor:
        """Packed token ids -> final hidden states [T, H].

        `skip_layers`: layer indices to bypass (pruning studies). `tap(kind, i, tensor)` observes
        kind in {"layer_in", "ffn_in", "layer_out"} of layer i (calibration statistics).
        `stop=i`: return the hidden states entering layer i instead; `start=(i, x)`: begin at layer i from
        such states x [T, H] (a frozen bottom computed once and cached: see train/teacher.py)."""
        cfg, o = self.cfg, self.ops
        if start is None:
            e = self.embed
            x = e.word(batch.input_ids) + e.position(batch.positions + cfg.position_offset)
            if cfg.type_vocab_size:
                x = x + e.token_type.weight[0]
            x = o.add_layernorm(x, None, e.norm.weight, e.norm.bias, cfg.norm_eps)[0]
            first = 0
        else:
            first, x = start
        bias = self.attention_bias(batch.max_seqlen, x.device)
        T, H, nh, hd = x.shape[0], cfg.hidden_size, cfg.num_heads, cfg.head_dim
        for i, layer in enumerate(self.layers):
            if stop is not None and i >= stop:
                break
            if i < first or i in skip_layers:
                continue
            if tap is not None:
                tap("layer_in", i, x)
            qkv = o.linear(x, layer.qkv.weight, layer.qkv.bias).view(T, 3, nh, hd)
            a = o.varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], batch.cu_seqlens, batch.max_seqlen,
                                     causal=False, scale=hd ** -0.5, bias=bias)
            a = o.linear(a.reshape(T, H), layer.o.weight, layer.o.bias)
            x = o.add_layernorm(a, x, layer.attn_norm.weight, layer.attn_norm.bias, cfg.norm_eps)[0]
            if tap is not None:
                tap("ffn_in", i, x)
            f = o.gelu_ffn(x, layer.up.weight, layer.up.bias, layer.down.weight, layer.down.bias)
            x = o.add_layernorm(f, x, layer.ffn_norm.weight, layer.ffn_norm.bias, cfg.norm_eps)[0]
            if tap is not None:
                tap("layer_out", i, x)
        return x

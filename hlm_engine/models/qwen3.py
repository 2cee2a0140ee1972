"""Qwen3 (and Qwen2, by config flags) decoder used as an embedding model, Qwen3-Embedding style.

Pre-RMSNorm blocks with the residual add fused into the norms and the down projection:
    h, r = add_rmsnorm(x, None);  q,k,v = h Wqkv^T (+b for Qwen2);  q,k = rope(rmsnorm_head(q), rmsnorm_head(k))
    a = causal GQA attention;  h, r = add_rmsnorm(a Wo^T, r);  x = swiglu(h) Wd^T + r
Final RMSNorm, then last-token (EOS) pooling.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hlm_engine import ops
from hlm_engine.config import EncoderConfig

from .packing import PackedBatch


class _RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))


class Qwen3Layer(nn.Module):
    def __init__(self, cfg: EncoderConfig, intermediate: int):
        super().__init__()
        H, hd = cfg.hidden_size, cfg.head_dim
        self.attn_norm = _RMSNorm(H)
        self.qkv = nn.Linear(H, (cfg.num_heads + 2 * cfg.num_kv_heads) * hd, bias=cfg.attention_bias)
        if cfg.qk_norm:
            self.q_norm = _RMSNorm(hd)
            self.k_norm = _RMSNorm(hd)
        self.o = nn.Linear(cfg.num_heads * hd, H, bias=False)
        self.ffn_norm = _RMSNorm(H)
        self.gate_up = nn.Linear(H, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, H, bias=False)


class _Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)


class Qwen3Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, backend: str = "torch"):
        super().__init__()
        self.cfg = cfg
        self.ops = ops.get(backend)   # chosen once, carried by the model
        self.backend = self.ops.name
        self.embed = _Embeddings(cfg)
        self.layers = nn.ModuleList(Qwen3Layer(cfg, i) for i in cfg.intermediate_sizes)
        self.norm = _RMSNorm(cfg.hidden_size)
        if cfg.output_dim:
            self.proj = nn.Linear(cfg.hidden_size, cfg.output_dim)

    def forward(self, batch: PackedBatch, skip_layers=(), tap=None, start=None, stop=None) -> torch.Tensor:
        """Packed token ids -> final-normed hidden states [T, H]. `skip_layers` / `tap` / `start` / `stop` as
        in bert.py (here "layer_in"/"layer_out" observe the residual stream, "ffn_in" the normed FFN input;
        `stop` returns the residual stream entering that layer, un-normed)."""
        cfg, o = self.cfg, self.ops
        nq, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        first, x = start if start is not None else (0, self.embed.word(batch.input_ids))
        T = x.shape[0]
        for i, layer in enumerate(self.layers):
            if stop is not None and i >= stop:
                return x
            if i < first or i in skip_layers:
                continue
            if tap is not None:
                tap("layer_in", i, x)
            h, r = o.add_rmsnorm(x, None, layer.attn_norm.weight, cfg.norm_eps)
            qkv = o.linear(h, layer.qkv.weight, layer.qkv.bias)
            q = qkv[:, : nq * hd].view(T, nq, hd)
            k = qkv[:, nq * hd: (nq + nkv) * hd].view(T, nkv, hd)
            v = qkv[:, (nq + nkv) * hd:].view(T, nkv, hd)
            q, k = o.qk_norm_rope(q, k, layer.q_norm.weight if cfg.qk_norm else None,
                                    layer.k_norm.weight if cfg.qk_norm else None, batch.positions,
                                    cfg.rope_theta, cfg.norm_eps)
            a = o.varlen_attention(q, k, v.contiguous(), batch.cu_seqlens, batch.max_seqlen, causal=True,
                                     scale=hd ** -0.5)
            a = o.linear(a.reshape(T, nq * hd), layer.o.weight)
            h, r = o.add_rmsnorm(a, r, layer.ffn_norm.weight, cfg.norm_eps)
            if tap is not None:
                tap("ffn_in", i, h)
            x = o.swiglu_ffn(h, layer.gate_up.weight, layer.down.weight, residual=r)
            if tap is not None:
                tap("layer_out", i, x)
        return o.add_rmsnorm(x, None, self.norm.weight, cfg.norm_eps)[0]

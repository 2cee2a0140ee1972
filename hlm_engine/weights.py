"""Weight files <-> our fused layout.

Loading reads HF names (`*.safetensors`, sharded or not; a `.bin` only through `weights_only=True`, never
arbitrary pickle) and fuses q/k/v into one QKV matrix and gate/up into one matrix. Saving writes HF
names back (unfused), so a saved folder with uniform widths is also a valid `transformers` folder.
"""
from __future__ import annotations

import glob
import hashlib
import os

import torch

from hlm_engine.config import EncoderConfig
from hlm_engine.io import sha256_update_file

# Prefixes that wrap the bare encoder in various HF heads / sentence-transformers exports.
_PREFIXES = ("bert.", "mpnet.", "model.", "roberta.", "0.auto_model.", "auto_model.")


def read_weight_files(folder: str) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a folder, prefixes stripped, and a description of where they came from."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    sd: dict[str, torch.Tensor] = {}
    if files:
        for f in files:
            try:
                sd.update(load_file(f))
            except (SafetensorError, OSError, ValueError) as e:
                raise ValueError(f"{f}: corrupt or unreadable safetensors file ({e})") from None
        where = ", ".join(os.path.basename(f) for f in files)
    else:
        bins = sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
        if not bins:
            raise FileNotFoundError(f"{folder}: no weight files (*.safetensors or pytorch_model*.bin)")
        for f in bins:
            try:  # weights_only: tensors and plain containers only, never arbitrary code
                sd.update(torch.load(f, map_location="cpu", weights_only=True))
            except Exception as e:
                raise ValueError(f"{f}: corrupt or unsafe weight file ({type(e).__name__}: {e})") from None
        where = ", ".join(os.path.basename(f) for f in bins)
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out, where


class _Source:
    def __init__(self, sd, where, folder):
        self.sd, self.where, self.folder = sd, where, folder

    def __call__(self, name):
        if name not in self.sd:
            raise KeyError(f"{self.folder}: tensor {name!r} missing from {self.where}")
        return self.sd[name]


def hf_to_ours(cfg: EncoderConfig, sd: dict[str, torch.Tensor], where: str = "", folder: str = "") -> dict:
    g = _Source(sd, where, folder)
    out: dict[str, torch.Tensor] = {}
    if cfg.arch in ("bert", "mpnet"):
        out["embed.word.weight"] = g("embeddings.word_embeddings.weight")
        out["embed.position.weight"] = g("embeddings.position_embeddings.weight")
        if cfg.type_vocab_size:
            out["embed.token_type.weight"] = g("embeddings.token_type_embeddings.weight")
        out["embed.norm.weight"] = g("embeddings.LayerNorm.weight")
        out["embed.norm.bias"] = g("embeddings.LayerNorm.bias")
        if cfg.relative_attention_num_buckets:
            out["rel_bias.weight"] = g("encoder.relative_attention_bias.weight")
        for i in range(cfg.num_layers):
            p = f"encoder.layer.{i}."
            if cfg.arch == "bert":
                q, k, v, o = (p + "attention.self.query", p + "attention.self.key", p + "attention.self.value",
                              p + "attention.output.dense")
                an = p + "attention.output.LayerNorm"
            else:
                q, k, v, o = (p + "attention.attn.q", p + "attention.attn.k", p + "attention.attn.v",
                              p + "attention.attn.o")
                an = p + "attention.LayerNorm"
            L = f"layers.{i}."
            out[L + "qkv.weight"] = torch.cat([g(q + ".weight"), g(k + ".weight"), g(v + ".weight")])
            out[L + "qkv.bias"] = torch.cat([g(q + ".bias"), g(k + ".bias"), g(v + ".bias")])
            out[L + "o.weight"], out[L + "o.bias"] = g(o + ".weight"), g(o + ".bias")
            out[L + "attn_norm.weight"], out[L + "attn_norm.bias"] = g(an + ".weight"), g(an + ".bias")
            out[L + "up.weight"] = g(p + "intermediate.dense.weight")
            out[L + "up.bias"] = g(p + "intermediate.dense.bias")
            out[L + "down.weight"] = g(p + "output.dense.weight")
            out[L + "down.bias"] = g(p + "output.dense.bias")
            out[L + "ffn_norm.weight"] = g(p + "output.LayerNorm.weight")
            out[L + "ffn_norm.bias"] = g(p + "output.LayerNorm.bias")
    else:
        out["embed.word.weight"] = g("embed_tokens.weight")
        out["norm.weight"] = g("norm.weight")
        for i in range(cfg.num_layers):
            p, L = f"layers.{i}.", f"layers.{i}."
            a = p + "self_attn."
            out[L + "attn_norm.weight"] = g(p + "input_layernorm.weight")
            out[L + "qkv.weight"] = torch.cat([g(a + "q_proj.weight"), g(a + "k_proj.weight"), g(a + "v_proj.weight")])
            if cfg.attention_bias:
                out[L + "qkv.bias"] = torch.cat([g(a + "q_proj.bias"), g(a + "k_proj.bias"), g(a + "v_proj.bias")])
            if cfg.qk_norm:
                out[L + "q_norm.weight"] = g(a + "q_norm.weight")
                out[L + "k_norm.weight"] = g(a + "k_norm.weight")
            out[L + "o.weight"] = g(a + "o_proj.weight")
            out[L + "ffn_norm.weight"] = g(p + "post_attention_layernorm.weight")
            out[L + "gate_up.weight"] = torch.cat([g(p + "mlp.gate_proj.weight"), g(p + "mlp.up_proj.weight")])
            out[L + "down.weight"] = g(p + "mlp.down_proj.weight")
    if cfg.output_dim:
        out["proj.weight"] = g("hlm_projection.weight")
        out["proj.bias"] = g("hlm_projection.bias")
    return out


def ours_to_hf(cfg: EncoderConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of hf_to_ours (un-fuses QKV and gate/up); tensors are made contiguous copies."""
    out: dict[str, torch.Tensor] = {}
    H = cfg.hidden_size
    if cfg.arch in ("bert", "mpnet"):
        out["embeddings.word_embeddings.weight"] = sd["embed.word.weight"]
        out["embeddings.position_embeddings.weight"] = sd["embed.position.weight"]
        if cfg.type_vocab_size:
            out["embeddings.token_type_embeddings.weight"] = sd["embed.token_type.weight"]
        out["embeddings.LayerNorm.weight"] = sd["embed.norm.weight"]
        out["embeddings.LayerNorm.bias"] = sd["embed.norm.bias"]
        if cfg.relative_attention_num_buckets:
            out["encoder.relative_attention_bias.weight"] = sd["rel_bias.weight"]
        for i in range(cfg.num_layers):
            p, L = f"encoder.layer.{i}.", f"layers.{i}."
            if cfg.arch == "bert":
                names = [p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"]
                o, an = p + "attention.output.dense", p + "attention.output.LayerNorm"
            else:
                names = [p + "attention.attn.q", p + "attention.attn.k", p + "attention.attn.v"]
                o, an = p + "attention.attn.o", p + "attention.LayerNorm"
            for n, w, b in zip(names, sd[L + "qkv.weight"].split(H), sd[L + "qkv.bias"].split(H)):
                out[n + ".weight"], out[n + ".bias"] = w, b
            out[o + ".weight"], out[o + ".bias"] = sd[L + "o.weight"], sd[L + "o.bias"]
            out[an + ".weight"], out[an + ".bias"] = sd[L + "attn_norm.weight"], sd[L + "attn_norm.bias"]
            out[p + "intermediate.dense.weight"] = sd[L + "up.weight"]
            out[p + "intermediate.dense.bias"] = sd[L + "up.bias"]
            out[p + "output.dense.weight"] = sd[L + "down.weight"]
            out[p + "output.dense.bias"] = sd[L + "down.bias"]
            out[p + "output.LayerNorm.weight"] = sd[L + "ffn_norm.weight"]
            out[p + "output.LayerNorm.bias"] = sd[L + "ffn_norm.bias"]
    else:
        hd, nq, nkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        out["embed_tokens.weight"] = sd["embed.word.weight"]
        out["norm.weight"] = sd["norm.weight"]
        for i in range(cfg.num_layers):
            p = L = f"layers.{i}."
            a = p + "self_attn."
            out[p + "input_layernorm.weight"] = sd[L + "attn_norm.weight"]
            sizes = [nq * hd, nkv * hd, nkv * hd]
            for n, w in zip(("q_proj", "k_proj", "v_proj"), sd[L + "qkv.weight"].split(sizes)):
                out[a + n + ".weight"] = w
            if cfg.attention_bias:
                for n, b in zip(("q_proj", "k_proj", "v_proj"), sd[L + "qkv.bias"].split(sizes)):
                    out[a + n + ".bias"] = b
            if cfg.qk_norm:
                out[a + "q_norm.weight"] = sd[L + "q_norm.weight"]
                out[a + "k_norm.weight"] = sd[L + "k_norm.weight"]
            out[a + "o_proj.weight"] = sd[L + "o.weight"]
            out[p + "post_attention_layernorm.weight"] = sd[L + "ffn_norm.weight"]
            gate, up = sd[L + "gate_up.weight"].chunk(2)
            out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
            out[p + "mlp.down_proj.weight"] = sd[L + "down.weight"]
    if cfg.output_dim:
        out["hlm_projection.weight"] = sd["proj.weight"]
        out["hlm_projection.bias"] = sd["proj.bias"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def weights_checksum(folder: str) -> str:
    """sha256 of the weight files (used in manifests to pin an index to the exact model)."""
    h = hashlib.sha256()
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors"))) or \
        sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    for f in files:
        sha256_update_file(h, f)
    return h.hexdigest()


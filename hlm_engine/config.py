"""Flat encoder configuration: one dataclass, named presets, and the mapping from HF `config.json`.

Everything a forward pass needs is here; nothing is read from `transformers` at run time.
Per-layer FFN widths (`intermediate_sizes`) make structurally pruned models first-class.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from hlm_engine.io import read_json

SUPPORTED_ARCHS = ("bert", "mpnet", "qwen3", "qwen2")
POOLING_MODES = ("mean", "cls", "last")


@dataclass
class EncoderConfig:
    arch: str                      # one of SUPPORTED_ARCHS
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_sizes: list[int]  # FFN width of each layer (pruned models differ per layer)
    max_position_embeddings: int
    norm_eps: float
    max_length: int = 512          # tokens per text after truncation (incl. special tokens)
    pooling: str = "mean"          # mean | cls | last
    normalize: bool = True
    causal: bool = False
    type_vocab_size: int = 0       # BERT token-type embeddings (we always use type 0)
    pad_token_id: int = 0
    position_offset: int = 0       # MPNet/RoBERTa positions start at padding_idx + 1
    relative_attention_num_buckets: int = 0   # MPNet relative-position bias (0 = none)
    relative_attention_max_distance: int = 128
    rope_theta: float = 1_000_000.0
    qk_norm: bool = False          # Qwen3 per-head RMSNorm on q and k
    attention_bias: bool = True    # q/k/v biases (BERT, MPNet, Qwen2; not Qwen3)
    append_eos_token_id: int | None = None    # Qwen3-Embedding appends <|endoftext|> for last-token pooling
    query_instruction: str | None = None      # "Instruct: {task}\nQuery:" style prefix for queries
    output_dim: int | None = None  # folded linear projection after pooling (student -> teacher space)
    weights: str = "fp32"          # CPU inference weight format: fp32 | bf16 | int8 (the native forward's)
    name: str = ""

    def __post_init__(self):
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {self.pooling!r}; supported: {', '.join(POOLING_MODES)}")
        if len(self.intermediate_sizes) != self.num_layers:
            raise ValueError(
                f"intermediate_sizes has {len(self.intermediate_sizes)} entries for {self.num_layers} layers")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")

    @property
    def is_decoder_style(self) -> bool:
        return self.arch in ("qwen3", "qwen2")

    @property
    def embed_dim(self) -> int:
        return self.output_dim or self.hidden_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)


def _arch_from_hf(hf: dict) -> str:
    mt = hf.get("model_type", "")
    archs = hf.get("architectures") or []
    if mt in ("bert",) or any(a.startswith("Bert") for a in archs):
        return "bert"
    if mt == "mpnet":
        return "mpnet"
    if mt == "qwen3":
        return "qwen3"
    if mt == "qwen2":
        return "qwen2"
    raise ValueError(f"unknown architecture model_type={mt!r} architectures={archs}; supported: "
                     f"{', '.join(SUPPORTED_ARCHS)}")


def from_hf_config(hf: dict, st_max_length: int | None = None, pooling: str | None = None,
                   normalize: bool | None = None) -> EncoderConfig:
    """Map an HF `config.json` dict (plus sentence-transformers settings) to an EncoderConfig."""
    arch = _arch_from_hf(hf)
    H = hf["hidden_size"]
    nh = hf["num_attention_heads"]
    L = hf["num_hidden_layers"]
    inter = hf["intermediate_size"]
    sizes = list(inter) if isinstance(inter, list) else [inter] * L
    if arch in ("bert", "mpnet"):
        if hf.get("hidden_act", "gelu") not in ("gelu",):
            raise ValueError(f"unsupported hidden_act {hf.get('hidden_act')!r} for {arch} (only exact 'gelu')")
        if arch == "bert" and hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported for BERT")
        max_pos = hf["max_position_embeddings"]
        offset = hf.get("pad_token_id", 1) + 1 if arch == "mpnet" else 0
        return EncoderConfig(
            arch=arch, vocab_size=hf["vocab_size"], hidden_size=H, num_layers=L, num_heads=nh,
            num_kv_heads=nh, head_dim=H // nh, intermediate_sizes=sizes, max_position_embeddings=max_pos,
            norm_eps=hf.get("layer_norm_eps", 1e-12), max_length=min(st_max_length or 512, max_pos - offset),
            pooling=pooling or "mean", normalize=True if normalize is None else normalize, causal=False,
            type_vocab_size=hf.get("type_vocab_size", 0) if arch == "bert" else 0,
            pad_token_id=hf.get("pad_token_id", 0), position_offset=offset,
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32) if arch == "mpnet" else 0,
            attention_bias=True, name=hf.get("_name_or_path", ""))
    # Qwen3 / Qwen2 decoder used as an embedding model (Qwen3-Embedding recipe).
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported hidden_act {hf.get('hidden_act')!r} for {arch} (only 'silu')")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope and rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ValueError(f"unsupported rope scaling {rope!r}; only default RoPE is implemented")
    theta = hf.get("rope_theta", rope.get("rope_theta", 1_000_000.0))
    return EncoderConfig(
        arch=arch, vocab_size=hf["vocab_size"], hidden_size=H, num_layers=L, num_heads=nh,
        num_kv_heads=hf.get("num_key_value_heads", nh), head_dim=hf.get("head_dim") or H // nh,
        intermediate_sizes=sizes, max_position_embeddings=hf.get("max_position_embeddings", 32768),
        norm_eps=hf.get("rms_norm_eps", 1e-6), max_length=min(st_max_length or 8192,
                                                              hf.get("max_position_embeddings", 32768)),
        pooling=pooling or "last", normalize=True if normalize is None else normalize, causal=True,
        pad_token_id=hf.get("pad_token_id") or 0, rope_theta=float(theta), qk_norm=(arch == "qwen3"),
        attention_bias=(arch == "qwen2") or bool(hf.get("attention_bias", False)),
        append_eos_token_id=hf.get("eos_token_id") if isinstance(hf.get("eos_token_id"), int) else None,
        name=hf.get("_name_or_path", ""))


def to_hf_config(cfg: EncoderConfig) -> dict:
    """The HF `config.json` for a model with uniform FFN width (only such models are HF-loadable)."""
    if len(set(cfg.intermediate_sizes)) != 1:
        raise ValueError(f"per-layer FFN widths {cfg.intermediate_sizes} have no transformers config")
    inter = cfg.intermediate_sizes[0]
    if cfg.arch == "bert":
        return dict(model_type="bert", architectures=["BertModel"], hidden_size=cfg.hidden_size,
                    num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                    intermediate_size=inter, hidden_act="gelu", max_position_embeddings=cfg.max_position_embeddings,
                    layer_norm_eps=cfg.norm_eps, type_vocab_size=max(cfg.type_vocab_size, 1),
                    vocab_size=cfg.vocab_size, pad_token_id=cfg.pad_token_id,
                    position_embedding_type="absolute")
    if cfg.arch == "mpnet":
        return dict(model_type="mpnet", architectures=["MPNetModel"], hidden_size=cfg.hidden_size,
                    num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                    intermediate_size=inter, hidden_act="gelu", max_position_embeddings=cfg.max_position_embeddings,
                    layer_norm_eps=cfg.norm_eps, vocab_size=cfg.vocab_size, pad_token_id=cfg.pad_token_id,
                    relative_attention_num_buckets=cfg.relative_attention_num_buckets)
    return dict(model_type=cfg.arch, architectures=["Qwen3Model" if cfg.arch == "qwen3" else "Qwen2Model"],
                hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, intermediate_size=inter,
                hidden_act="silu", max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.norm_eps,
                rope_theta=cfg.rope_theta, vocab_size=cfg.vocab_size, attention_bias=cfg.attention_bias,
                tie_word_embeddings=False, eos_token_id=cfg.append_eos_token_id)


def _qwen3(name, H, L, nh, nkv, inter, **kw) -> EncoderConfig:
    return EncoderConfig(arch="qwen3", vocab_size=151669, hidden_size=H, num_layers=L, num_heads=nh,
                         num_kv_heads=nkv, head_dim=128, intermediate_sizes=[inter] * L,
                         max_position_embeddings=32768, norm_eps=1e-6, max_length=8192, pooling="last",
                         causal=True, rope_theta=1_000_000.0, qk_norm=True, attention_bias=False,
                         append_eos_token_id=151643, name=name, **kw)


# Named presets (gpt-fast style). The Qwen3 shapes are the published Qwen3-Embedding ones; the
# "qwen3-190m" preset is the paper's deployed 4-layer student class.
PRESETS: dict[str, EncoderConfig] = {
    "minilm-l6": EncoderConfig(arch="bert", vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                               num_kv_heads=12, head_dim=32, intermediate_sizes=[1536] * 6,
                               max_position_embeddings=512, norm_eps=1e-12, max_length=256, type_vocab_size=2,
                               name="all-MiniLM-L6-v2"),
    "mpnet-base": EncoderConfig(arch="mpnet", vocab_size=30527, hidden_size=768, num_layers=12, num_heads=12,
                                num_kv_heads=12, head_dim=64, intermediate_sizes=[3072] * 12,
                                max_position_embeddings=514, norm_eps=1e-5, max_length=384, pad_token_id=1,
                                position_offset=2, relative_attention_num_buckets=32, name="all-mpnet-base-v2"),
    "qwen3-embedding-0.6b": _qwen3("Qwen3-Embedding-0.6B", 1024, 28, 16, 8, 3072),
    "qwen3-embedding-4b": _qwen3("Qwen3-Embedding-4B", 2560, 36, 32, 8, 9728),
    "qwen3-embedding-8b": _qwen3("Qwen3-Embedding-8B", 4096, 36, 32, 8, 12288),
    "qwen3-190m": _qwen3("qwen3-4layer-student", 1024, 4, 16, 8, 3072),
}


def preset(name: str, **overrides) -> EncoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def load_folder_config(folder: str) -> EncoderConfig:
    """Read our `hlm_config.json` if present, else map HF + sentence-transformers settings."""
    ours = os.path.join(folder, "hlm_config.json")
    if os.path.exists(ours):
        return EncoderConfig.from_dict(read_json(ours))
    hf_path = os.path.join(folder, "config.json")
    if not os.path.exists(hf_path):
        raise FileNotFoundError(f"{folder}: no config.json or hlm_config.json (not a model folder)")
    hf = read_json(hf_path)
    st_max, pooling, normalize = _sentence_transformers_settings(folder)
    return from_hf_config(hf, st_max_length=st_max, pooling=pooling, normalize=normalize)


def _sentence_transformers_settings(folder: str):
    """(max_seq_length, pooling mode, normalize) from sentence-transformers' files, each None if absent."""
    st_max = pooling = normalize = None
    p = os.path.join(folder, "sentence_bert_config.json")
    if os.path.exists(p):
        st_max = read_json(p).get("max_seq_length")
    modules_path = os.path.join(folder, "modules.json")
    if os.path.exists(modules_path):
        modules = read_json(modules_path)
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                pc = read_json(os.path.join(folder, m.get("path", ""), "config.json"))
                if pc.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif pc.get("pooling_mode_lasttoken"):
                    pooling = "last"
                elif pc.get("pooling_mode_mean_tokens"):
                    pooling = "mean"
                else:
                    modes = [k for k, v in pc.items() if k.startswith("pooling_mode") and v]
                    raise ValueError(f"{folder}: unsupported sentence-transformers pooling {modes}; "
                                     f"supported: {', '.join(POOLING_MODES)}")
    return st_max, pooling, normalize

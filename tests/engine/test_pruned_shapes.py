"""Structurally pruned shapes are first-class: any number of layers and a different FFN width per layer
build, run, are recorded in our config, and survive `save_pretrained` -> `from_pretrained` bit for bit.

Two sources of such models: random init of a small config (`Encoder.from_config`) for each architecture,
and a real MiniLM sliced to 3 of its 6 layers with per-layer FFN neurons removed (what `train/` pruning
produces).
"""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from hlm_engine import Encoder, EncoderConfig
from hlm_engine.config import load_folder_config
from hlm_engine.models import build_model
from hlm_engine.hub import resolve

WIDTHS = [96, 40, 257]  # three layers, three FFN widths (one not a multiple of anything)
TEXTS = ["cordless drill", "x", "Ridgecraft 20-Volt Lithium-Ion Cordless 1/2 in. Drill/Driver Kit",
         "white semi-gloss interior paint 5 gallon", "r19 insulation"]


def _tokenizer_path():
    return os.path.join(resolve("minilm"), "tokenizer.json")


def _small_config(arch: str) -> EncoderConfig:
    common = dict(vocab_size=30522, hidden_size=64, num_layers=3, intermediate_sizes=list(WIDTHS),
                  max_position_embeddings=130, max_length=128, name=f"pruned-{arch}")
    if arch == "bert":
        return EncoderConfig(arch="bert", num_heads=4, num_kv_heads=4, head_dim=16, norm_eps=1e-12,
                             type_vocab_size=2, **common)
    if arch == "mpnet":
        return EncoderConfig(arch="mpnet", num_heads=4, num_kv_heads=4, head_dim=16, norm_eps=1e-5,
                             pad_token_id=1, position_offset=2, relative_attention_num_buckets=32, **common)
    # Qwen3 shape class (GQA 4:2, qk-norm, SwiGLU, last-token pooling) on the BERT vocabulary; [SEP]=102 as EOS.
    return EncoderConfig(arch="qwen3", num_heads=4, num_kv_heads=2, head_dim=16, norm_eps=1e-6, pooling="last",
                         causal=True, qk_norm=True, attention_bias=False, append_eos_token_id=102, **common)


@pytest.mark.parametrize("arch", ["bert", "mpnet", "qwen3"])
def test_random_pruned_model_round_trips(arch, tmp_path):
    cfg = _small_config(arch)
    enc = Encoder.from_config(cfg, _tokenizer_path(), backend="torch", seed=0)
    assert [layer.down.weight.shape[1] for layer in enc.model.layers] == WIDTHS  # FFN width of each layer
    before = enc.encode(TEXTS)
    assert before.shape == (len(TEXTS), 64) and np.isfinite(before).all()
    np.testing.assert_allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)

    path = tmp_path / f"pruned-{arch}"
    enc.save_pretrained(str(path))
    saved = json.loads((path / "hlm_config.json").read_text())
    assert saved["intermediate_sizes"] == WIDTHS and saved["num_layers"] == 3
    assert load_folder_config(str(path)).intermediate_sizes == WIDTHS

    again = Encoder.from_pretrained(str(path), backend="torch")
    assert again.config == enc.config
    np.testing.assert_array_equal(again.encode(TEXTS), before)


def _slice_minilm(full: Encoder, keep_layers, widths) -> Encoder:
    """Keep `keep_layers` and, in each, the `widths[i]` FFN neurons with the largest output-weight norm."""
    sd = full.model.state_dict()
    new = {k: v for k, v in sd.items() if not k.startswith("layers.")}
    for i, (old, w) in enumerate(zip(keep_layers, widths)):
        src, dst = f"layers.{old}.", f"layers.{i}."
        for k, v in sd.items():
            if k.startswith(src):
                new[dst + k[len(src):]] = v
        keep = sd[src + "down.weight"].norm(dim=0).topk(w).indices.sort().values
        new[dst + "up.weight"] = sd[src + "up.weight"][keep]
        new[dst + "up.bias"] = sd[src + "up.bias"][keep]
        new[dst + "down.weight"] = sd[src + "down.weight"][:, keep]
    cfg = dataclasses.replace(full.config, num_layers=len(keep_layers), intermediate_sizes=list(widths))
    model = build_model(cfg, "torch")
    model.load_state_dict(new)
    return Encoder(cfg, model.eval(), full.tokenizer, None)


def test_identity_slice_reproduces_minilm(minilm):
    same = _slice_minilm(minilm, range(6), [1536] * 6)
    np.testing.assert_allclose(same.encode(TEXTS), minilm.encode(TEXTS), atol=1e-6)


def test_sliced_real_minilm_runs_and_round_trips(minilm, tmp_path):
    widths = [1536, 700, 257]
    pruned = _slice_minilm(minilm, [0, 2, 5], widths)
    emb = pruned.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 384) and np.isfinite(emb).all()
    full = minilm.encode(TEXTS)
    cos = (emb * full).sum(1)
    assert (cos < 0.999999).any(), "pruning changed nothing: the slice did not take effect"

    pruned.save_pretrained(str(tmp_path / "minilm-pruned"))
    again = Encoder.from_pretrained(str(tmp_path / "minilm-pruned"), backend="torch")
    assert again.config.intermediate_sizes == widths and again.config.num_layers == 3
    assert sum(p.numel() for p in again.model.parameters()) < sum(p.numel() for p in minilm.model.parameters())
    np.testing.assert_array_equal(again.encode(TEXTS), emb)
    with torch.inference_mode():  # and the packed batch path agrees with one-at-a-time
        alone = np.concatenate([again.embed_ids([x]) for x in again.tokenize(TEXTS)])
    assert (alone * emb).sum(1).min() >= 0.99999

"""The Qwen3 path against transformers' own Qwen3Model (random weights of real Qwen3 shapes).

No Qwen3 weights can be obtained here, so parity is checked on a randomly initialised checkpoint that
`transformers` writes itself: hidden 1024, 16 query / 8 KV heads, head_dim 128 (Qwen3-Embedding-0.6B's
attention shapes), with mixed lengths in one packed batch so GQA and the causal mask are exercised.
"""
import os

import numpy as np
import pytest
import torch

from hlm_engine import Encoder
from hlm_engine.models.packing import pack


def _qwen_tokenizer():
    from hlm_engine.hub import resolve
    try:
        return os.path.join(resolve("qwen3-tokenizer"), "tokenizer.json")
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"Qwen3 tokenizer not installed ({e})")


def _write_hf_qwen(tmp_path, arch="qwen3", layers=2, vocab=151669, inter=768):
    transformers = pytest.importorskip("transformers")
    import shutil
    kw = dict(vocab_size=vocab, hidden_size=1024, intermediate_size=inter, num_hidden_layers=layers,
              num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
              rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=False, eos_token_id=151643,
              attn_implementation="eager")
    torch.manual_seed(0)
    if arch == "qwen3":
        model = transformers.Qwen3Model(transformers.Qwen3Config(**kw))
    else:
        kw.pop("head_dim")
        kw.update(num_attention_heads=8, num_key_value_heads=4)  # Qwen2 derives head_dim = 1024 / 8 = 128
        model = transformers.Qwen2Model(transformers.Qwen2Config(**kw))
    with torch.no_grad():  # random norm weights too, so a mixed-up norm cannot pass by being all-ones
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    model.eval()
    folder = tmp_path / arch
    model.save_pretrained(folder)
    shutil.copy(_qwen_tokenizer(), folder / "tokenizer.json")
    return model, str(folder)


TEXTS = ["cordless drill", "Instruct: Given a shopping query, retrieve relevant products\nQuery:outdoor lights",
         "a", "20 ft. x 30 ft. heavy duty silver tarp with grommets every 18 in. for boats, trucks and " * 3,
         "Qwen3 embedding check with several more tokens than the others in the batch"]


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
def test_qwen_matches_transformers(tmp_path, arch):
    ref, folder = _write_hf_qwen(tmp_path, arch)
    enc = Encoder.from_pretrained(folder, backend="torch")
    assert enc.config.arch == arch and enc.config.pooling == "last" and enc.config.causal
    assert enc.config.num_kv_heads == (8 if arch == "qwen3" else 4) and enc.config.head_dim == 128
    ids = enc.tokenize(TEXTS)
    assert all(x[-1] == 151643 for x in ids), "EOS appended for last-token pooling"
    batch = pack(ids)
    with torch.no_grad():
        ours = enc.model(batch)
        # transformers on a right-padded rectangle; causal attention makes valid positions pad-independent.
        L = batch.max_seqlen
        inp = torch.zeros(len(ids), L, dtype=torch.long)
        mask = torch.zeros(len(ids), L, dtype=torch.long)
        for i, x in enumerate(ids):
            inp[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        theirs = ref(input_ids=inp, attention_mask=mask).last_hidden_state
    theirs_packed = torch.cat([theirs[i, : len(x)] for i, x in enumerate(ids)])
    err = (ours - theirs_packed).abs().max().item()
    scale = theirs_packed.abs().max().item()
    assert err <= 1e-4 * scale, f"hidden states differ: max abs err {err} (scale {scale})"
    # last-token pooling + normalisation, as Qwen3-Embedding does it
    emb = enc.embed_ids(ids)
    last = torch.stack([theirs[i, len(x) - 1] for i, x in enumerate(ids)])
    ref_emb = torch.nn.functional.normalize(last, dim=-1).numpy()
    cos = (emb * ref_emb).sum(1)
    assert cos.min() >= 0.99999, cos


def test_qwen3_matryoshka_and_prompt(tmp_path):
    _, folder = _write_hf_qwen(tmp_path, "qwen3", layers=1)
    enc = Encoder.from_pretrained(folder, backend="torch")
    full = enc.encode(["cordless drill"], normalize=False)
    cut = enc.encode(["cordless drill"], dim=256)
    np.testing.assert_allclose(cut, full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    assert abs(np.linalg.norm(cut) - 1) < 1e-5
    from hlm_engine.encoder import qwen3_query_prompt
    p = qwen3_query_prompt("Given a shopping query, retrieve relevant products")
    a = enc.encode(["drill"], prompt=p)
    b = enc.encode([p + "drill"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        enc.encode(["x"], dim=2048)

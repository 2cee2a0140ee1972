"""One embedding interface: `embed(texts, role="query" | "document")`, `dim`, `space`, implemented by `Encoder`
and `Engine`; `Retriever` uses only it, so a Qwen3-style query instruction applies on every path."""
import os

import numpy as np
import pytest

from hlm_engine import Encoder, Engine
from hlm_engine.config import EncoderConfig
from hlm_engine.hub import resolve
from hlm_engine.retrieval.index import build_index
from hlm_engine.retrieval.retriever import Retriever

QUERIES = ["cordless drill", "white interior paint", "r19 insulation", "x"]
DOCS = ["Ridgecraft 20-Volt Cordless Drill", "Behr 1 gal. White Paint", "R-19 Kraft Faced Batt Insulation",
        "Moen Kitchen Faucet", "Husky 3 ft. Step Ladder"]
INSTRUCTION = "Instruct: Given a shopping query, retrieve the products it asks for\nQuery:"


@pytest.fixture(scope="module")
def qwen3_like():
    """A small Qwen3-architecture encoder (GQA, causal, last-token pooling) with a query instruction."""
    cfg = EncoderConfig(arch="qwen3", vocab_size=30522, hidden_size=64, num_layers=2, intermediate_sizes=[96, 96],
                        max_position_embeddings=256, max_length=128, num_heads=4, num_kv_heads=2, head_dim=16,
                        norm_eps=1e-6, pooling="last", causal=True, qk_norm=True, attention_bias=False,
                        append_eos_token_id=102, query_instruction=INSTRUCTION, name="qwen3-like")
    return Encoder.from_config(cfg, os.path.join(resolve("minilm"), "tokenizer.json"), backend="torch", seed=0)


def test_encoder_embed_applies_the_role_prompt(qwen3_like):
    q = qwen3_like.embed(QUERIES, role="query")
    np.testing.assert_allclose(q, qwen3_like.encode(QUERIES, prompt=INSTRUCTION), atol=1e-6)
    d = qwen3_like.embed(QUERIES, role="document")
    np.testing.assert_allclose(d, qwen3_like.encode(QUERIES), atol=1e-6)
    assert not np.allclose(q, d, atol=1e-3)  # the instruction changes the vectors
    assert q.shape == (len(QUERIES), qwen3_like.dim)
    with pytest.raises(ValueError, match="unknown role 'ad'"):
        qwen3_like.embed(QUERIES, role="ad")


def test_engine_embed_equals_encoder_embed(qwen3_like):
    want = qwen3_like.embed(QUERIES, role="query")
    with Engine(qwen3_like, max_delay_us=0) as eng:
        np.testing.assert_allclose(eng.embed(QUERIES, role="query"), want, atol=1e-5)
        with pytest.raises(ValueError, match="serves role 'query', not 'document'"):
            eng.embed(QUERIES, role="document")
        t = eng.embed(QUERIES, role="query", dim=16)  # Matryoshka: truncate, unit length again
        np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(t, qwen3_like.embed(QUERIES, role="query", dim=16), atol=1e-5)
    with Engine(qwen3_like, max_delay_us=0, role="document") as eng:
        np.testing.assert_allclose(eng.embed(QUERIES), qwen3_like.embed(QUERIES, role="document"), atol=1e-5)


def test_retriever_over_engine_equals_retriever_over_encoder(qwen3_like):
    """The bug this interface fixed: a Retriever over an Engine dropped the query instruction."""
    docs = qwen3_like.embed(DOCS, role="document")
    index = build_index(docs, [f"d{i}" for i in range(len(DOCS))], kind="flat")
    want = Retriever(index, qwen3_like).search(QUERIES, k=3)
    with Engine(qwen3_like, max_delay_us=0) as eng:
        got = Retriever(index, eng).search(QUERIES, k=3)
    assert [[d for d, _ in row] for row in got] == [[d for d, _ in row] for row in want]
    for row_g, row_w in zip(got, want):
        np.testing.assert_allclose([s for _, s in row_g], [s for _, s in row_w], atol=1e-5)


def test_space_identity(minilm):
    s = minilm.space
    assert s["dim"] == minilm.dim == 384 and s["checksum"] and s["space"] == s["checksum"]

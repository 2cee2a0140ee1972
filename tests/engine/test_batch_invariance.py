"""A text's embedding must not depend on its batch: alone vs inside a packed batch of 64 mixed lengths.

Pass: cos >= 0.99999 for every text, for the student (BERT, absolute positions) and the teacher (MPNet,
relative-position bias, where a wrong per-sequence offset or padding mask would show up first). The texts
come from the shipped sample set (no real data needed) plus edge lengths: one word, one character, and a
~90-token text.
"""
import numpy as np
import pytest

from hlm_engine.retrieval.data import SAMPLE_DIR, read_tsv

MIN_COS = 0.99999


@pytest.fixture(scope="module")
def mixed_texts():
    titles = read_tsv(f"{SAMPLE_DIR}/products.tsv", ["title"])["title"]
    queries = read_tsv(f"{SAMPLE_DIR}/queries_dev.tsv", ["query"])["query"]
    long_text = " ".join(titles[:5])  # ~90 tokens (truncation itself is covered in test_bad_input.py)
    texts = ["drill", "x", long_text, titles[0] + " " + titles[1]] + titles[:30] + queries[:30]
    assert len(texts) == 64
    return texts


@pytest.mark.parametrize("name", ["minilm", "mpnet"])
def test_alone_equals_in_batch(name, mixed_texts, request):
    enc = request.getfixturevalue(name)
    ids = enc.tokenize(mixed_texts)
    lens = [len(x) for x in ids]
    assert min(lens) <= 3 and max(lens) >= 64  # the batch really mixes lengths
    together = enc.embed_ids(ids)                            # one packed batch of 64
    alone = np.concatenate([enc.embed_ids([x]) for x in ids])
    cos = (together.astype(np.float64) * alone).sum(1)       # both L2-normalised
    worst = int(cos.argmin())
    assert cos.min() >= MIN_COS, f"{name}: min cos {cos.min():.7f} for text {worst} ({lens[worst]} tokens)"


@pytest.mark.parametrize("name", ["minilm"])
def test_encode_independent_of_batch_size_and_order(name, mixed_texts, request):
    enc = request.getfixturevalue(name)
    a = enc.encode(mixed_texts, batch_size=64)
    b = enc.encode(mixed_texts, batch_size=7)               # batches that are not a divisor of 64
    perm = np.random.default_rng(0).permutation(len(mixed_texts))
    c = enc.encode([mixed_texts[i] for i in perm], batch_size=16)
    assert (a * b).sum(1).min() >= MIN_COS
    assert (a[perm] * c).sum(1).min() >= MIN_COS

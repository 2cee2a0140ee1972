"""Our encoders vs `sentence-transformers` (the reference, used in tests only) on real queries and titles.

Pass: cos(ours_i, reference_i) >= 0.99999 for every text i, fp32 on CPU, for the student (MiniLM) and the
teacher (MPNet). The texts are 200 real dev queries and 200 real product titles (the first of each, plus the
longest titles so long sequences and truncation are covered). Skips with a reason without $HLM_DATA_DIR.
"""
import numpy as np
import pytest

N_QUERIES, N_TITLES, N_LONGEST = 200, 192, 8
MIN_COS = 0.99999


@pytest.fixture(scope="module")
def real_texts(homedepot_dev):
    ds = homedepot_dev
    titles = ds.doc_texts[:N_TITLES]
    longest = sorted(ds.doc_texts, key=len, reverse=True)[:N_LONGEST]
    return {"queries": ds.queries[:N_QUERIES], "titles": titles + longest}


def _reference(name):
    from sentence_transformers import SentenceTransformer

    from hlm_engine.hub import resolve
    return SentenceTransformer(resolve(name), device="cpu")


def _row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", ["minilm", "mpnet"])
@pytest.mark.parametrize("kind", ["queries", "titles"])
def test_matches_sentence_transformers(name, kind, real_texts, request):
    enc = request.getfixturevalue(name)  # session fixtures from tests/conftest.py (torch backend, fp32)
    texts = real_texts[kind]
    assert len(texts) >= 200
    ref_model = _reference(name)
    assert ref_model.max_seq_length == enc.max_length, "truncation length differs from the reference"
    ours = enc.encode(texts, batch_size=64)
    ref = ref_model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(texts), enc.dim)
    cos = _row_cos(ours, ref)
    worst = int(cos.argmin())
    assert cos.min() >= MIN_COS, f"{name} {kind}: min cos {cos.min():.7f} at {texts[worst]!r}"

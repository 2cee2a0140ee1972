"""Real teacher (MPNet) embeddings of a Home Depot slice, computed once and cached per user.

The slice: the first SLICE products in file order (one 4096-row shard, the same rows as the first shard of the
bench's full-corpus encoding). Cached with encode_corpus itself under $HLM_TEST_CACHE (default
~/.cache/hlm/test-cache), keyed by the teacher's weights checksum and the slice size: a cold run encodes
4k short titles with MPNet (a few minutes on 2 free cores), later runs load them in milliseconds.
"""
import os

import numpy as np
import pytest

SLICE = 4096
N_QUERIES = 400


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("HLM_TEST_CACHE", "~/.cache/hlm/test-cache"))


@pytest.fixture(scope="session")
def teacher_slice(homedepot_dev):
    """(ids, float32 [SLICE, 768], manifest) of the teacher's embeddings of the slice."""
    from hlm_engine.retrieval.corpus import encode_corpus, load_embeddings, model_identity
    ids, texts = homedepot_dev.doc_ids[:SLICE], homedepot_dev.doc_texts[:SLICE]
    ident = model_identity("mpnet")
    out = os.path.join(cache_root(), f"homedepot-slice{SLICE}-{ident['checksum'][:12]}")
    manifest = encode_corpus("mpnet", ids, texts, out, shard_size=4096, batch_size=64, show_progress=False)
    got_ids, vecs = load_embeddings(out)
    assert got_ids == ids
    return ids, vecs, manifest


@pytest.fixture(scope="session")
def teacher_queries(homedepot_dev, teacher_slice):
    """(query_ids, float32 [N_QUERIES, 768]): dev queries encoded by the teacher (cached beside the slice)."""
    from hlm_engine.retrieval.corpus import encode_corpus, load_embeddings
    qids, qs = homedepot_dev.query_ids[:N_QUERIES], homedepot_dev.queries[:N_QUERIES]
    out = os.path.join(cache_root(), f"homedepot-devq{N_QUERIES}-{teacher_slice[2]['model']['checksum'][:12]}")
    encode_corpus("mpnet", qids, qs, out, shard_size=4096, show_progress=False)
    got, vecs = load_embeddings(out)
    assert got == qids
    return qids, np.ascontiguousarray(vecs)


@pytest.fixture(scope="session", autouse=True)
def _faiss_one_thread():
    """faiss's OpenMP threads spin at barriers: on a shared, oversubscribed CI box one thread is far faster
    (results do not depend on the thread count)."""
    import faiss
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)

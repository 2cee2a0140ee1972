"""ANN indexes on real teacher embeddings of a Home Depot slice: recall vs exact, save/load, updates,
pairing checks, and the GPU device guard (its logic on CPU; the GPU path itself only where one exists)."""
import json
import os

import numpy as np
import pytest

from hlm_engine.retrieval.index import AnnIndex, build_index, exact_topk
from hlm_engine.retrieval.index import faiss_gpu
from hlm_engine.retrieval.index.params import STATED_RECALL, default_kind, resolve_params

K = 100


def _recall(ids, truth_idx, got_ids):
    """mean |approx top-k ∩ exact top-k| / k."""
    return float(np.mean([len({ids[j] for j in t} & set(g)) / len(t) for t, g in zip(truth_idx, got_ids)]))


@pytest.fixture(scope="module")
def truth(teacher_slice, teacher_queries):
    _, vecs, _ = teacher_slice
    return exact_topk(teacher_queries[1], vecs, K)


@pytest.mark.parametrize("kind", ["flat", "ivf-flat", "ivf-pq", "hnsw"])
def test_recall_at_100_vs_exact(kind, teacher_slice, teacher_queries, truth):
    ids, vecs, man = teacher_slice
    index = build_index(vecs, ids, kind=kind, device="cpu", model=man["model"])
    _, got = index.search(teacher_queries[1], K)
    r = _recall(ids, truth[1], got)
    assert r >= STATED_RECALL[kind], f"{kind}: recall@{K} {r:.4f} < stated {STATED_RECALL[kind]} ({index.params})"


def test_exact_topk_matches_flat_scores(teacher_slice, teacher_queries, truth):
    ids, vecs, _ = teacher_slice
    scores, got = build_index(vecs, ids, kind="flat", device="cpu").search(teacher_queries[1], 10)
    q = teacher_queries[1] / np.linalg.norm(teacher_queries[1], axis=1, keepdims=True)
    d = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    ts, _ = exact_topk(q, d, 10, chunk=64)  # chunking must not change the answer
    np.testing.assert_allclose(scores, ts, atol=1e-5)
    assert _recall(ids, truth[1][:, :10], got) > 0.99  # only near-ties may swap


def test_save_load_roundtrip_and_manifest(teacher_slice, teacher_queries, tmp_path):
    ids, vecs, man = teacher_slice
    index = build_index(vecs, ids, kind="hnsw", device="cpu", model=man["model"], ef_search=300)
    index.save(str(tmp_path / "idx"))
    m = json.load(open(tmp_path / "idx" / "manifest.json"))
    assert (m["kind"], m["metric"], m["dim"], m["count"]) == ("hnsw", "ip", 768, len(ids))
    assert m["model"]["checksum"] == man["model"]["checksum"] and m["params"]["ef_search"] == 300
    loaded = AnnIndex.load(str(tmp_path / "idx"), dim=768, teacher_checksum=man["model"]["checksum"])
    s1, d1 = index.search(teacher_queries[1][:50], 20)
    s2, d2 = loaded.search(teacher_queries[1][:50], 20)
    assert d1 == d2 and np.array_equal(s1, s2) and loaded.params.ef_search == 300
    index.save(str(tmp_path / "idx"))  # overwrite in place: atomic swap, no leftovers
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_load_refuses_mismatch(teacher_slice, tmp_path):
    ids, vecs, man = teacher_slice
    build_index(vecs[:500], ids[:500], kind="flat", model=man["model"]).save(str(tmp_path / "idx"))
    with pytest.raises(ValueError, match="768-d but the query encoder emits 384-d"):
        AnnIndex.load(str(tmp_path / "idx"), dim=384)
    with pytest.raises(ValueError, match="built from teacher 'all-mpnet-base-v2'.*different embedding spaces"):
        AnnIndex.load(str(tmp_path / "idx"), dim=768, teacher_checksum="0" * 64)
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        AnnIndex.load(str(tmp_path))


def test_retriever_pairing(teacher_slice, minilm, mpnet, homedepot_dev, tmp_path):
    from hlm_engine import Retriever
    ids, vecs, man = teacher_slice
    build_index(vecs, ids, kind="flat", model=man["model"]).save(str(tmp_path / "idx"))
    with pytest.raises(ValueError, match="768-d but the query encoder emits 384-d"):
        Retriever.load(str(tmp_path / "idx"), minilm)
    r = Retriever.load(str(tmp_path / "idx"), mpnet, doc_texts=dict(zip(ids, ids)))  # the teacher itself
    qs = homedepot_dev.queries[:3]
    hits = r.search(qs, k=5, batch_size=2)
    truth = r.index.search(mpnet.encode(qs), 5)[1]
    assert [[d for d, _ in h] for h in hits] == truth and all(len(h) == 5 for h in hits)
    assert hits[0][0][1] >= hits[0][1][1]
    # A student folder declaring its teacher: accepted only by an index of that teacher.
    student = tmp_path / "student"
    student.mkdir()
    for f in os.listdir(minilm.folder):
        os.symlink(os.path.join(minilm.folder, f), student / f)
    (student / "hlm_alignment.json").write_text(json.dumps({"teacher": "t", "teacher_checksum": "a" * 64}))
    small = minilm.encode(homedepot_dev.doc_texts[:50])
    build_index(small, ids[:50], kind="flat", model={"name": "t", "checksum": "a" * 64}).save(str(tmp_path / "s"))
    assert len(Retriever.load(str(tmp_path / "s"), str(student)).search(["drill"], k=3)[0]) == 3
    build_index(small, ids[:50], kind="flat", model={"name": "u", "checksum": "b" * 64}).save(str(tmp_path / "u"))
    with pytest.raises(ValueError, match="built from teacher 'u'"):
        Retriever.load(str(tmp_path / "u"), str(student))


@pytest.mark.parametrize("kind", ["ivf-flat", "hnsw", "flat"])
def test_incremental_add_and_remove(kind, teacher_slice):
    ids, vecs, _ = teacher_slice
    n = len(ids) - 200
    index = build_index(vecs[:n], ids[:n], kind=kind, device="cpu")
    index.add(vecs[n:], ids[n:])
    assert len(index) == len(ids)
    scores, got = index.search(vecs[n:n + 50], 5)
    # each new ad finds itself without a rebuild (duplicate titles tie with it, hence top-5 at score ~1)
    assert all(d in g for d, g in zip(ids[n:n + 50], got)) and (scores[:, 0] > 0.999).all()
    with pytest.raises(ValueError, match="already in the index"):
        index.add(vecs[:1], ids[:1])
    if kind == "hnsw":
        with pytest.raises(ValueError, match="hnsw index cannot delete"):
            index.remove(ids[:1])
        return
    assert index.remove(ids[n:n + 10]) == 10 and len(index) == len(ids) - 10
    _, got = index.search(vecs[n:n + 10], 5)
    assert not set(ids[n:n + 10]) & {d for g in got for d in g}
    with pytest.raises(KeyError, match="not in the index"):
        index.remove(ids[n:n + 1])


def test_size_based_defaults():
    assert default_kind(5_000) == "flat" and default_kind(54_667) == "hnsw"
    p = resolve_params(54_667, 768)
    assert p.nlist == 1024 and p.pq_m == 96 and p.pq_nbits == 8 and 1 <= p.nprobe <= p.nlist
    small = resolve_params(3_000, 768)
    assert small.nlist * 39 <= 3_000 and 2 ** small.pq_nbits * 39 <= 3_000
    assert resolve_params(54_667, 768, nlist=256, nprobe=999).nprobe == 256
    with pytest.raises(ValueError, match="unknown index parameter"):
        resolve_params(100, 8, nprobes=3)


def test_gpu_device_guard():
    """faiss-gpu with 0 GPUs returns an *empty* index from index_cpu_to_all_gpus: never let that through."""
    assert faiss_gpu.resolve_device("auto", n_gpus=0) == "cpu"
    assert faiss_gpu.resolve_device("cpu", n_gpus=4) == "cpu"
    assert faiss_gpu.resolve_device("auto", "hnsw", n_gpus=1) == "cpu"  # no GPU HNSW: stays on CPU
    assert faiss_gpu.resolve_device("auto", "cagra", n_gpus=1) == "cuda"
    with pytest.raises(ValueError, match="device='cuda' requested but"):
        faiss_gpu.resolve_device("cuda", n_gpus=0)
    with pytest.raises(ValueError, match="no GPU implementation"):
        faiss_gpu.resolve_device("cuda", "hnsw", n_gpus=1)
    x = np.eye(8, dtype=np.float32)
    index = build_index(x, [str(i) for i in range(8)], kind="flat", device="cpu").index
    with pytest.raises(RuntimeError, match="refusing index_cpu_to_all_gpus with 0 GPUs"):
        faiss_gpu.checked_cpu_to_gpu(index, n_gpus=0)
    if faiss_gpu.num_gpus() == 0:
        with pytest.raises(ValueError, match="CAGRA is a GPU index"):
            build_index(x, [str(i) for i in range(8)], kind="cagra", device="cpu")
        assert build_index(x, [str(i) for i in range(8)], kind="cagra", device="auto").kind == "hnsw"


@pytest.mark.skipif(faiss_gpu.num_gpus() == 0, reason="needs faiss-gpu and a visible GPU")
@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq", "cagra"])
def test_gpu_indexes(kind, teacher_slice, teacher_queries, truth, tmp_path):
    ids, vecs, man = teacher_slice
    index = build_index(vecs, ids, kind=kind, device="cuda", model=man["model"])
    assert index.device == "cuda" and len(index) == len(ids)
    _, got = index.search(teacher_queries[1], K)
    assert _recall(ids, truth[1], got) >= STATED_RECALL[kind]
    index.save(str(tmp_path / "g"))
    assert len(AnnIndex.load(str(tmp_path / "g"), device="cuda")) == len(ids)

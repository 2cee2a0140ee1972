"""faiss-gpu indexes (IVF-Flat, IVF-PQ, CAGRA via cuVS) and the device choice with its CPU fallback.

Known pitfall guarded here: with faiss-gpu installed but zero visible GPUs, `index_cpu_to_all_gpus`
returns an *empty* index without raising, and every search then returns nothing. We never call it
without first counting GPUs, and we check ntotal after every copy.
"""
from __future__ import annotations

import logging

import numpy as np

from hlm_engine.retrieval.index.params import IndexParams

log = logging.getLogger("hlm.index")
GPU_KINDS = ("flat", "ivf-flat", "ivf-pq", "cagra")


def faiss_has_gpu_support() -> bool:
    import faiss
    return hasattr(faiss, "StandardGpuResources")


def num_gpus() -> int:
    import faiss
    return faiss.get_num_gpus() if faiss_has_gpu_support() else 0


def resolve_device(device: str = "auto", kind: str | None = None, n_gpus: int | None = None) -> str:
    """'cpu' | 'cuda' for a requested device. auto -> cuda when faiss-gpu sees a GPU and the kind has a GPU
    implementation, else cpu (logged when faiss-gpu is present but no GPU is). An explicit 'cuda' that
    cannot be honoured raises."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto|cpu|cuda, got {device!r}")
    n = num_gpus() if n_gpus is None else n_gpus
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if n == 0:
            why = "faiss has no GPU support (faiss-cpu installed)" if not faiss_has_gpu_support() else \
                "faiss-gpu is installed but sees no GPU"
            raise ValueError(f"device='cuda' requested but {why}")
        if kind is not None and kind not in GPU_KINDS:
            raise ValueError(f"index kind {kind!r} has no GPU implementation (GPU kinds: {', '.join(GPU_KINDS)})")
        return "cuda"
    if n == 0:
        if faiss_has_gpu_support():
            log.info("faiss-gpu installed but no GPU visible: building the index on CPU")
        return "cpu"
    return "cuda" if kind is None or kind in GPU_KINDS else "cpu"


def checked_cpu_to_gpu(index, n_gpus: int | None = None):
    """Copy a CPU index to all GPUs, refusing the silent-empty-index case (0 GPUs or a lost copy)."""
    n = num_gpus() if n_gpus is None else n_gpus
    if n == 0:
        raise RuntimeError("refusing index_cpu_to_all_gpus with 0 GPUs: faiss would return an empty index")
    import faiss
    gpu = faiss.index_cpu_to_all_gpus(index)
    if gpu.ntotal != index.ntotal:
        raise RuntimeError(f"GPU copy holds {gpu.ntotal} vectors, CPU index {index.ntotal}: copy failed")
    return gpu


def build_gpu(kind: str, x: np.ndarray, labels: np.ndarray, p: IndexParams):
    """Train and fill a GPU index. Returns a faiss GPU index (labels as ids; CAGRA: positions)."""
    import faiss

    from hlm_engine.retrieval.index.faiss_cpu import training_sample
    res = faiss.StandardGpuResources()
    d, ip = x.shape[1], faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.GpuIndexFlatIP(res, d))
    elif kind == "ivf-flat":
        index = faiss.GpuIndexIVFFlat(res, d, p.nlist, ip)
    elif kind == "ivf-pq":
        cfg = faiss.GpuIndexIVFPQConfig()
        cfg.useFloat16LookupTables = True  # required for many sub-quantizers (shared memory limit)
        index = faiss.GpuIndexIVFPQ(res, d, p.nlist, p.pq_m, p.pq_nbits, ip, cfg)
    elif kind == "cagra":
        if not hasattr(faiss, "GpuIndexCagra"):
            raise ValueError("this faiss-gpu build has no CAGRA (needs faiss >= 1.8 built with cuVS)")
        cfg = faiss.GpuIndexCagraConfig()
        cfg.graph_degree = p.cagra_degree
        cfg.intermediate_graph_degree = 2 * p.cagra_degree
        index = faiss.GpuIndexCagra(res, d, ip, cfg)
        index.train(x)  # CAGRA builds its graph from the training call; no incremental add
        if not np.array_equal(labels, np.arange(len(labels))):
            raise ValueError("CAGRA keys vectors by position: build it fresh (labels 0..N-1)")
        index._hlm_res = res  # keep the GPU resources alive as long as the index
        return index
    else:
        raise ValueError(f"no GPU index of kind {kind!r} (GPU kinds: {', '.join(GPU_KINDS)})")
    if not index.is_trained:
        index.train(training_sample(x, p.train_size, p.seed))
    index.add_with_ids(x, labels)
    if kind in ("ivf-flat", "ivf-pq"):
        index.nprobe = p.nprobe
    index._hlm_res = res
    return index


def gpu_search_params(kind: str, p: IndexParams, k: int):
    """Per-search parameters for CAGRA (itopk must be >= k); None for other kinds."""
    if kind != "cagra":
        return None
    import faiss
    sp = faiss.SearchParametersCagra()
    sp.itopk_size = max(p.cagra_itopk, k)
    return sp


def to_cpu(index):
    """A CPU copy for saving (CAGRA becomes an IndexHNSWCagra, searchable on CPU)."""
    import faiss
    return faiss.index_gpu_to_cpu(index)

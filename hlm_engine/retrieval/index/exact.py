"""Exact top-k by inner product in torch (chunked matmul + topk): small corpora and ground truth."""
from __future__ import annotations

import numpy as np
import torch


def exact_topk(queries, docs, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """queries [Q, d], docs [N, d] (np or torch) -> (scores [Q, k'], indices [Q, k']) with k' = min(k, N).

    Chunked over queries so the [chunk, N] score block stays bounded in memory."""
    q = torch.as_tensor(queries).float()
    d = torch.as_tensor(docs).float()
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"shape mismatch: queries {tuple(q.shape)} vs docs {tuple(d.shape)}")
    k = min(int(k), d.shape[0])
    if k < 1:
        raise ValueError("k must be >= 1 and the corpus non-empty")
    scores, idx = [], []
    for s in range(0, q.shape[0], chunk):
        sc, ix = (q[s: s + chunk] @ d.T).topk(k, dim=1)
        scores.append(sc)
        idx.append(ix)
    return torch.cat(scores).numpy(), torch.cat(idx).numpy().astype(np.int64)

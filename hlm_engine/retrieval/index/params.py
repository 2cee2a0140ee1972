"""Index kinds and size-based defaults for their parameters (every field overridable).

Defaults follow the faiss guidelines (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index):
  nlist    ~ 4 sqrt(N), a power of two, with >= 39 training points per centroid (k-means needs them);
  nprobe   max(nlist / 16, nlist * 20 k / N) for the depth k = 100 served: the lists scanned must hold
           well over k candidates. Measured on Home Depot teacher embeddings: at N = 4k, k = 100 needs ~40%
           of the lists for recall@100 >= 0.95 (0.85 at nprobe 8/64, 0.97 at 24/64); at N = 55k, 1/16;
  pq_m     d / 8 sub-quantizers of 8 bits (8 dims per code byte: 768-d -> 96 bytes, 32x smaller than fp32);
  HNSW     M = 32, efConstruction = 200, efSearch = 256 (>= 2k for k = 100: the beam must hold the answer).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

KINDS = ("flat", "ivf-flat", "ivf-pq", "hnsw", "cagra")
SEARCH_K = 100  # the retrieval depth the defaults are tuned for (candidates for a re-ranker / metrics @100)
# Corpora this small are searched exactly: a flat scan is already fast and its recall is 1.
FLAT_BELOW = 20_000
# Recall@100 vs exact search each kind is held to (tests on a 4k slice, bench on the full corpus). IVF-PQ
# ranks by 8-bit codes of 8-dim sub-vectors with no exact re-ranking: measured 0.74-0.78 at N = 4k.
STATED_RECALL = {"flat": 0.999, "ivf-flat": 0.95, "hnsw": 0.95, "ivf-pq": 0.70, "cagra": 0.95}


@dataclass
class IndexParams:
    nlist: int = 0             # IVF lists (0 = from N)
    nprobe: int = 0            # IVF lists scanned per query (0 = from nlist)
    pq_m: int = 0              # PQ sub-quantizers (0 = d / 8, rounded down to a divisor of d)
    pq_nbits: int = 0          # bits per PQ code (0 = 8, fewer when N < 39 * 256 cannot train 256 codes)
    hnsw_m: int = 32           # HNSW neighbours per node
    ef_construction: int = 200
    ef_search: int = 256
    cagra_degree: int = 64     # CAGRA graph degree (GPU)
    cagra_itopk: int = 256     # CAGRA internal top-k during search (GPU), >= k
    train_size: int = 0        # vectors sampled to train IVF/PQ (0 = all up to 256 per list)
    seed: int = 1234

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexParams":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown index parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def default_kind(n: int) -> str:
    """`auto`: exact flat scan for small corpora, else HNSW (best recall/QPS trade-off in the bench)."""
    return "flat" if n < FLAT_BELOW else "hnsw"


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1)))))


def resolve_params(n: int, d: int, params: IndexParams | None = None, **overrides) -> IndexParams:
    """Fill zero fields of `params` (and `overrides`) from the corpus size n and dim d."""
    p = IndexParams.from_dict({**(params.to_dict() if params else {}), **overrides})
    if p.nlist <= 0:
        p.nlist = max(1, min(_pow2_floor(4 * math.sqrt(n) * 1.5), _pow2_floor(n / 39)))
    if p.nprobe <= 0:
        p.nprobe = min(p.nlist, max(8, p.nlist // 16, math.ceil(p.nlist * 20 * SEARCH_K / n)))
    if p.pq_m <= 0:
        m = max(1, d // 8)
        while d % m:
            m -= 1
        p.pq_m = m
    if p.pq_nbits <= 0:
        p.pq_nbits = max(1, min(8, int(math.log2(max(n / 39, 2)))))
    if d % p.pq_m:
        raise ValueError(f"pq_m={p.pq_m} must divide the dimension {d}")
    if p.train_size <= 0:
        p.train_size = min(n, 256 * p.nlist)
    for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "pq_nbits"):
        if getattr(p, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(p, name)}")
    if p.nprobe > p.nlist:
        p.nprobe = p.nlist
    return p

"""ANN index over teacher embeddings: faiss (CPU, or GPU when present) plus exact torch search as truth."""
from hlm_engine.retrieval.index.ann import AnnIndex, build_index, build_index_from_embeddings_dir
from hlm_engine.retrieval.index.exact import exact_topk
from hlm_engine.retrieval.index.params import KINDS, IndexParams, default_kind, resolve_params

__all__ = ["AnnIndex", "build_index", "build_index_from_embeddings_dir", "exact_topk", "KINDS", "IndexParams",
           "default_kind", "resolve_params"]

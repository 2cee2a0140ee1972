"""`hlm index build|info|add|remove`: ANN index over encode-corpus shards (faiss; GPU when present)."""
from __future__ import annotations

from hlm_engine.retrieval.index.params import KINDS

_PARAMS = ("nlist", "nprobe", "pq_m", "pq_nbits", "hnsw_m", "ef_construction", "ef_search", "cagra_degree")


def register(sub):
    p = sub.add_parser("index", help="build / inspect / update an ANN index over corpus embeddings")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = s.add_parser("build", help="build an index from `hlm encode-corpus` shards")
    b.add_argument("--embeddings", required=True, help="folder written by hlm encode-corpus")
    b.add_argument("--kind", default="auto", choices=("auto",) + KINDS)
    b.add_argument("--out", required=True, help="index folder (written atomically)")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    for name in _PARAMS:
        b.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the size-based default")
    i = s.add_parser("info", help="print an index manifest")
    i.add_argument("--index", required=True)
    a = s.add_parser("add", help="add new ads (encode-corpus shards of the same teacher) without rebuilding")
    a.add_argument("--index", required=True)
    a.add_argument("--embeddings", required=True)
    r = s.add_parser("remove", help="delete ads by id (flat / IVF indexes)")
    r.add_argument("--index", required=True)
    r.add_argument("--ids", required=True, help="comma-separated doc ids, or @file with one id per line")
    p.set_defaults(func=run)


def run(a):
    import json

    from hlm_engine.retrieval.index import AnnIndex, build_index_from_embeddings_dir

    if a.action == "build":
        overrides = {k: getattr(a, k) for k in _PARAMS if getattr(a, k) is not None}
        ix = build_index_from_embeddings_dir(a.embeddings, a.kind, a.out, device=a.device, **overrides)
        print(f"{a.out}: {ix.kind} index, {len(ix)} x {ix.dim}, {ix.nbytes() / 2**20:.1f} MiB, "
              f"params {json.dumps({k: v for k, v in ix.params.to_dict().items() if k in _PARAMS})}")
        return 0
    if a.action == "info":
        from hlm_engine.retrieval.index.manifest import read_index_manifest
        print(json.dumps(read_index_manifest(a.index), indent=2))
        return 0
    ix = AnnIndex.load(a.index)
    if a.action == "add":
        from hlm_engine.retrieval.corpus import load_embeddings, read_manifest
        em = read_manifest(a.embeddings)
        teacher = (ix.model or {}).get("checksum")
        if teacher and em["model"]["checksum"] != teacher:
            raise ValueError(f"{a.embeddings}: encoded by {em['model']['name']} ({em['model']['checksum'][:12]}), "
                             f"the index by {ix.model['name']} ({teacher[:12]}): different embedding spaces")
        ids, vecs = load_embeddings(a.embeddings)
        ix.add(vecs, ids)
        print(f"added {len(ids)} docs -> {len(ix)}")
    else:
        if a.ids.startswith("@"):
            with open(a.ids[1:]) as f:
                ids = [line.strip() for line in f if line.strip()]
        else:
            ids = [x for x in a.ids.split(",") if x]
        print(f"removed {ix.remove(ids)} docs -> {len(ix)}")
    ix.save(a.index)
    return 0

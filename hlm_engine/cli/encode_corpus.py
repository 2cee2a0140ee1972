"""`hlm encode-corpus`: a TSV of ads -> fp16 embedding shards + manifest (resumable; torchrun-aware)."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("encode-corpus", help="encode a corpus (TSV) offline with the teacher into shards")
    p.add_argument("--model", default="mpnet", help="mpnet | minilm | model folder (the teacher)")
    p.add_argument("--corpus", required=True, help="TSV file with a header row")
    p.add_argument("--id-column", default="product_id")
    p.add_argument("--text-column", default="title")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--shard-size", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(a):
    from hlm_engine.retrieval.corpus import encode_corpus
    from hlm_engine.retrieval.data import read_tsv

    t = read_tsv(a.corpus, [a.id_column, a.text_column])
    m = encode_corpus(a.model, t[a.id_column], t[a.text_column], a.out, shard_size=a.shard_size,
                      batch_size=a.batch_size, source=a.corpus, show_progress=not a.no_progress)
    print(f"{a.out}: {m['count']} x {m['dim']} {m['dtype']} in {m['num_shards']} shard(s), "
          f"model {m['model']['name']} ({(m['model']['checksum'] or 'unpinned')[:12]})")
    return 0

"""`hlm encode`: texts from a .txt/.tsv file -> embeddings .npy (atomic write)."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("encode", help="encode texts from a file into an .npy matrix")
    p.add_argument("--model", default="minilm", help="minilm | mpnet | model folder")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .tsv")
    p.add_argument("--column", help="text column of a .tsv input")
    p.add_argument("--output", required=True, help="output .npy (float32 [n, d])")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dim", type=int, default=None, help="Matryoshka truncation")
    p.add_argument("--prompt", default=None, help="prefix added to every text (e.g. a query instruction)")
    p.add_argument("--backend", default=None, choices=["auto", "torch", "cpu", "triton"])
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--weights", default=None, choices=["fp32", "bf16", "int8"],
                   help="CPU weight format of the native forward (default: the model's, else fp32)")
    p.add_argument("--threads", type=int, default=None, help="cores per forward (default: torch's thread count)")
    p.set_defaults(func=run)


def run(a):
    import time

    from hlm_engine import Encoder
    from hlm_engine.retrieval.data import read_texts
    from hlm_engine.io import save_npy

    texts = read_texts(a.input, a.column)
    enc = Encoder.from_pretrained(a.model, backend=a.backend, weights=a.weights, threads=a.threads)
    t0 = time.perf_counter()
    emb = enc.encode(texts, batch_size=a.batch_size, normalize=not a.no_normalize, dim=a.dim, prompt=a.prompt,
                     show_progress=True)
    dt = time.perf_counter() - t0
    save_npy(a.output, emb)
    print(f"encoded {len(texts)} texts -> {a.output} {emb.shape} in {dt:.1f}s ({len(texts) / dt:.0f} texts/s)")
    return 0

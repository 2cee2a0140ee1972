"""`hlm reproduce` / `make reproduce`: the HARNESS-LM recipe on the whole catalogue, measured on held-out queries.

    teacher fine-tune (top 3 layers, frozen-bottom cache) -> the fine-tuned teacher encodes every product
    -> ANN index -> student aligned (l2) on the query log, every product title and the train query texts
    (their teacher vectors come from the corpus encoding and the fine-tune's cache: no extra teacher pass)
    -> refined (InfoNCE against the frozen full index with mined hard negatives + an l2 anchor)
    -> the paper's baseline (direct asymmetric fine-tuning, the same refine budget from the raw student)
    -> progressive prune to a 2-layer student (re-aligned after every cut, refined at the end)
    -> dev-split table over every product

Every phase runs through the phase runner (train/runner.py): cached in a folder keyed by its config under
<work-dir>/phases, resumed from its checkpoint when interrupted. The table so far is published after every
phase (marked partial until the last), so a late or interrupted run still leaves its rows. The teacher's
no-grad passes (frozen bottom, corpus encodings) run on our C++ kernels when built. Fixed places:
    <work-dir>/teacher/         the fine-tuned teacher (model folder)
    <work-dir>/corpus/          its vectors of every product (encode_corpus folder): the index input
    <work-dir>/index/           the teacher's exact (flat) index over them, as `hlm index build --kind flat`
    <work-dir>/student/         the aligned + refined student (Encoder.from_pretrained loads it)
    <work-dir>/student-pruned/  the pruned, re-aligned and refined student
Evaluation: exact top-100 over the teacher's vectors of the corpus, every dev query, relevant = grade >=
--threshold (2.67) and, reported alongside, grade 3. The log holds every dev and train query: the dev ones
are removed from the alignment text (held out), the train ones come in with their cached teacher vectors.
Data: $HLM_DATA_DIR (or --data-dir), else the packaged sample set.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from hlm_engine.io import read_json, sha256_json, write_json
from hlm_engine.retrieval.data import data_dir
from hlm_engine.retrieval.index import build_index_from_embeddings_dir

# Imported here, not lazily: a long run must not pick up files edited while it runs.
from . import mining, prune, serve_check  # noqa: F401
from .align import AlignConfig, train_align
from .common import check_folder, copy_model, fast_backend, write_texts_tsv
from .data import DEFAULT_THRESHOLD
from .demo import teacher_recipe
from .embed import cached_encode
from .progressive import ProgressiveConfig, parse_schedule, run_progressive
from .refine import RefineConfig, train_refine
from .reproduce_report import Quality, publish, time_table
from .runner import phase_key, run_phase
from .teacher import TeacherConfig, finetuned_queries_dir, prepare, train_teacher

# From a fresh work dir on 2 idle cores (bench/results/reproduction.json has the measured phases): ~72 min. The
# teacher's layer-passes over the catalogue run at the GEMM roof, ~2.3-2.45 min each: the frozen bottom once,
# then the top layers off the shelf (the "before" row and the mining) and fine-tuned (the index), 12 + top
# passes. Top 3 (15 passes) is what fits: top 4 (16) measured 78-84 min in all with the best teacher (R@10 0.432 /
# R@100 0.774; `--teacher-layers 4`); top 2 (14) costs too much teacher (0.399 / 0.747; top 3: 0.411 / 0.759).
# The 2-cut prune (4x1536,2x1024) saved 1.8 min but left the pruned student within 0.003 nDCG@10 of the
# off-the-shelf one. 1,200 alignment steps, not 1,000: 1,000 measured R@10 95.2% of the teacher vs 96.7%.
RECIPE = dict(products=None, train_queries=None, dev_queries=None, log_queries=10000, teacher_steps=150,
              teacher_layers=3, align_steps=1200, align_lr=4e-4, refine_steps=300,
              prune_schedule="4x1536,2x1024", prune_align_steps=150, prune_final_align_steps=900,
              prune_refine_steps=300, eval_every=200)
INDEX_KIND = "flat"  # the evaluation is exact top-100 anyway; `hlm index build --kind hnsw` makes an ANN one
EXCLUDE = "dev,train"  # dev: held out; train: aligned on through their cached teacher vectors instead


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--work-dir", default="runs/reproduce")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--teacher", default="mpnet")
    ap.add_argument("--student", default="minilm")
    ap.add_argument("--products", type=int, help="corpus slice size (default: every product)")
    ap.add_argument("--train-queries", type=int, help="train queries (default: all)")
    ap.add_argument("--dev-queries", type=int, help="dev queries measured (default: all)")
    ap.add_argument("--log-queries", type=int, help=f"log queries for alignment (default {RECIPE['log_queries']})")
    ap.add_argument("--teacher-steps", type=int, help=f"teacher fine-tune steps (default {RECIPE['teacher_steps']})")
    ap.add_argument("--teacher-layers", type=int,
                    help=f"the teacher's top layers fine-tuned (default {RECIPE['teacher_layers']}; the rest frozen)")
    ap.add_argument("--align-steps", type=int, help=f"alignment steps (default {RECIPE['align_steps']})")
    ap.add_argument("--align-lr", type=float, help=f"peak alignment learning rate (default {RECIPE['align_lr']})")
    ap.add_argument("--refine-steps", type=int, help=f"refine and baseline steps (default {RECIPE['refine_steps']})")
    ap.add_argument("--prune-schedule", help=f"LAYERSxFFN steps (default {RECIPE['prune_schedule']}; '' = no pruning)")
    ap.add_argument("--prune-align-steps", type=int, help="re-alignment steps after each cut")
    ap.add_argument("--prune-final-align-steps", type=int,
                    help="re-alignment steps after the last cut (the shipped shape; default "
                         f"{RECIPE['prune_final_align_steps']})")
    ap.add_argument("--prune-refine-steps", type=int, help="refine steps of the pruned student")
    ap.add_argument("--eval-every", type=int, help="dev quality every N alignment steps (0 = off)")
    ap.add_argument("--no-baseline", action="store_true", help="skip direct asymmetric fine-tuning")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--publish", default=None, metavar="JSON",
                    help="also write the table, curve, phase times and machine stamp here (and a .md table beside)")


def parse(argv):
    ap = argparse.ArgumentParser(prog="hlm reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    return fill(ap.parse_args(argv))


def fill(a):
    for k, v in RECIPE.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def _fresh_teacher_places(root: str, key: str) -> None:
    """The fixed teacher, corpus and index places belong to one teacher config: a new one clears them."""
    p = os.path.join(root, "teacher.key")
    if os.path.exists(p) and open(p).read() == key:
        return
    if os.path.exists(p):
        for d in ("teacher", "corpus", "index"):
            shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    with open(p, "w") as f:
        f.write(key)


def main(argv=None, args=None) -> int:
    a = args if args is not None else parse(argv)
    ddir = data_dir(a.data_dir)
    root = os.path.abspath(a.work_dir)
    work = os.path.join(root, "phases")
    os.makedirs(work, exist_ok=True)
    print(f"[reproduce] data: {ddir or 'packaged sample set'}; work dir: {root}")
    t_start = time.perf_counter()
    phases: dict[str, dict] = {}  # name -> {wall_seconds, cached}

    times_path = os.path.join(work, "times.json")  # the timed steps' wall seconds, for a later pass's table
    times = read_json(times_path) if os.path.exists(times_path) else {}

    def timed(name, fn, done=None):
        """fn's wall time; a step whose output (`done`) an earlier pass finished reports that pass's time."""
        cached = done is not None and os.path.exists(done)
        t = time.perf_counter()
        out = fn()
        if cached:
            phases[name] = {"wall_seconds": times.get(name, 0.0), "cached": True}
        else:
            phases[name] = {"wall_seconds": round(time.perf_counter() - t, 1), "cached": False}
            times[name] = phases[name]["wall_seconds"]
            write_json(times_path, times)
        return out

    def phase(name, fn, cfg):
        log = run_phase(name, fn, cfg, work, say=lambda m: print(f"[reproduce] {m}", flush=True))
        phases[name] = {"wall_seconds": log["wall_seconds"], "cached": log["cached"]}
        return log

    slice_kw = dict(data_dir=ddir, threshold=a.threshold, max_train_queries=a.train_queries,
                    max_dev_queries=a.dev_queries, max_products=a.products)
    train, dev, pairs = timed("data", lambda: prepare(TeacherConfig(**slice_kw)))
    print(f"[reproduce] corpus {len(train.doc_ids)} products, {len(pairs.query_texts)} train queries "
          f"({len(pairs)} pairs), {len(dev.queries)} dev queries")
    sl = sha256_json(slice_kw, 8)
    teacher_dir, corpus_dir = os.path.join(root, "teacher"), os.path.join(root, "corpus")
    base_corpus = os.path.join(work, f"corpus-base-{sha256_json([a.teacher, sl], 8)}")
    tlog = None
    if a.teacher_steps:
        tcfg = TeacherConfig(teacher=a.teacher, steps=a.teacher_steps, base_corpus_dir=base_corpus,
                             corpus_dir=corpus_dir, model_dir=teacher_dir, backend=fast_backend(),
                             **teacher_recipe(a.teacher, a.teacher_layers), **slice_kw)
        tkey = phase_key(tcfg)
        _fresh_teacher_places(root, tkey)
        tlog = phase("teacher", train_teacher, tcfg)
        teacher = teacher_dir
        q_targets = finetuned_queries_dir(tlog["out_dir"])
    else:
        tkey = sha256_json([a.teacher, "off-the-shelf"], 12)
        _fresh_teacher_places(root, tkey)
        teacher = check_folder(a.teacher, "teacher")[0]
        q_targets = os.path.join(work, f"train-queries-{sha256_json([tkey, sl], 8)}")
    def teacher_corpus():
        return cached_encode(teacher, train.doc_texts, corpus_dir, ids=train.doc_ids)
    if tlog is None:
        timed("teacher corpus", teacher_corpus, os.path.join(corpus_dir, "manifest.json"))
    else:
        teacher_corpus()  # the teacher phase encoded it (its time is in that phase's): this only checks it
    if not os.path.exists(os.path.join(root, "index", "manifest.json")):  # flat: exact, and no 42 s HNSW build
        timed("index build", lambda: build_index_from_embeddings_dir(corpus_dir, kind=INDEX_KIND,
                                                                     out_dir=os.path.join(root, "index")))

    # Alignment text: the log (dev and train queries out), every title and the train queries, the last two
    # with the teacher vectors already computed (corpus encoding; the fine-tune's frozen-bottom cache).
    titles = write_texts_tsv(os.path.join(work, f"titles-{sl}.tsv"), train.doc_ids, train.doc_texts)
    trainq = write_texts_tsv(os.path.join(work, f"train-queries-{sl}.tsv"),
                             [f"t{i}" for i in range(len(pairs.query_texts))], pairs.query_texts)
    log_kw = dict(max_queries=a.log_queries, exclude_queries=EXCLUDE,
                  targets_dir=os.path.join(work, f"log-targets-{sha256_json([tkey, a.log_queries, EXCLUDE], 8)}"),
                  extra_texts_file=f"{titles},{trainq}", extra_targets_dir=f"{corpus_dir},{q_targets}")
    qual = Quality(os.path.join(root, "quality.json"), dev, a.threshold)
    rows, logs = {}, {}
    sizes = {"products": len(train.doc_ids), "train_queries": len(pairs.query_texts), "dev_queries": len(dev.queries)}

    def measure(name, key, model, docs=corpus_dir):
        t = time.perf_counter()
        rows[name] = qual.row(key, model, docs)
        ev = phases.setdefault("evaluate", {"wall_seconds": 0.0, "cached": False})
        ev["wall_seconds"] = round(ev["wall_seconds"] + time.perf_counter() - t, 1)

    def report(complete: bool):
        """The table so far, published after every phase: an interrupted or late run still leaves its rows."""
        publish(a, root, rows, phases, logs, time.perf_counter() - t_start, sizes, complete)

    if tlog is not None:
        measure("teacher (off the shelf)", "teacher-base", a.teacher, base_corpus)
        measure(f"teacher (fine-tuned, {a.teacher_steps} steps)", f"teacher-{tkey}", teacher)
    else:
        measure("teacher (off the shelf)", "teacher-base", teacher)
    logs["align"] = alog = phase("align", train_align, AlignConfig(
        student=a.student, teacher=teacher, data_dir=ddir, steps=a.align_steps, lr=a.align_lr,
        eval_every=a.eval_every, eval_corpus_dir=corpus_dir if a.eval_every else None,
        eval_dev_queries=a.dev_queries, **log_kw))
    sizes.update(log_queries=alog.get("queries"), align_texts=alog.get("queries", 0) + alog.get("extra_texts", 0))
    aligned = os.path.join(alog["out_dir"], "model")
    measure("student aligned", alog["out_dir"], aligned)
    report(False)
    refine_kw = dict(teacher=teacher, doc_embeddings=corpus_dir, query_targets_dir=q_targets, steps=a.refine_steps,
                     evaluate=False, **slice_kw)
    rlog = phase("refine", train_refine, RefineConfig(student=aligned, **refine_kw))
    refined = os.path.join(rlog["out_dir"], "model")
    copy_model(refined, os.path.join(root, "student"))
    measure("student aligned + refined", rlog["out_dir"], refined)
    report(False)
    # What the recipe must beat: the off-the-shelf student on both sides (its own vectors of every product).
    sdocs = os.path.join(work, f"corpus-student-{sha256_json([a.student, sl], 8)}")
    timed("student corpus (symmetric row)", lambda: cached_encode(check_folder(a.student, "student")[0],
                                                                  train.doc_texts, sdocs, ids=train.doc_ids),
          os.path.join(sdocs, "manifest.json"))
    measure("student off the shelf (symmetric)", "student-symmetric", a.student, sdocs)
    report(False)

    if not a.no_baseline:  # the paper's baseline: the same InfoNCE budget from the raw student, fresh head
        blog = phase("baseline", train_refine, RefineConfig(student=a.student, head_lr_mult=50.0, align_weight=0.0,
                                                            **refine_kw))
        measure("baseline: direct asymmetric (no align)", blog["out_dir"], os.path.join(blog["out_dir"], "model"))
        report(False)
    if a.prune_schedule:
        logs["prune"] = plog = phase("prune", run_progressive, ProgressiveConfig(
            student=refined, teacher=teacher, data_dir=ddir, schedule=parse_schedule(a.prune_schedule),
            steps=a.prune_align_steps, final_steps=a.prune_final_align_steps, lr=a.align_lr,
            max_products=a.products, max_train_queries=a.train_queries,
            refine=True, refine_steps=a.prune_refine_steps, refine_doc_embeddings=corpus_dir,
            refine_query_targets_dir=q_targets, model_dir=os.path.join(root, "student-pruned"), **log_kw))
        copy_model(plog["final_model"], os.path.join(root, "student-pruned"))  # a cached run left it elsewhere
        shape = a.prune_schedule.split(",")[-1].strip()
        measure(f"student pruned {shape} (re-aligned + refined)", plog["out_dir"], plog["final_model"])
    report(True)
    print(time_table(phases, time.perf_counter() - t_start))
    return 0


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="the whole recipe on the whole catalogue (make reproduce)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p)
    p.set_defaults(func=lambda a: main(args=fill(a)))


if __name__ == "__main__":
    sys.exit(main())

"""`hlm prune`: progressive structured pruning (prune a step -> re-align to the teacher -> repeat), and
`hlm prune scores`: the importance scores that pruning would act on.

    hlm prune --student minilm --teacher mpnet --schedule 4x1536,3x1024,2x1024 --align-steps 300 \\
              --out runs/prune [--refine-steps 200] [--evaluate] [--resume]
    hlm prune scores --model runs/prune/step0/align/model [--teacher mpnet] [--queries 512]

Flags mirror `ProgressiveConfig` field for field (`--calibration-queries` sets calibration_queries; the
re-alignment's steps and lr are `--align-steps` and `--align-lr`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

# The spellings: --out, and the re-alignment's Optim block (steps, lr) as --align-steps / --align-lr;
# every other flag is the field name.
_RENAMED = {"out_dir": "--out", "steps": "--align-steps", "lr": "--align-lr"}
_SKIPPED = ("stop_after",)  # progressive stops by pruning steps (--stop-after-steps), not by training steps


def _fields():
    from hlm_engine.train.progressive import ProgressiveConfig
    return ProgressiveConfig, dataclasses.fields(ProgressiveConfig)


def register(sub):
    from hlm_engine.train.cli_train import _flag_type
    cls, fields = _fields()
    p = sub.add_parser("prune", help="progressive structured pruning with re-alignment (and `prune scores`)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields:
        if f.name in _SKIPPED:
            continue
        flag = _RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "schedule":
            p.add_argument(flag, dest=f.name, default=None,
                           help="LAYERSxFFN_WIDTH steps, e.g. 4x1536,3x1024,2x1024 (default: %s)"
                                % ",".join(f"{a}x{b}" for a, b in default))
            continue
        tp, is_bool = _flag_type(f.type)
        if f.name == "refine_steps":  # giving a refinement budget asks for refinement
            p.add_argument(flag, dest=f.name, type=int, default=None,
                           help=f"contrastive refinement steps of the final model; implies --refine "
                                f"(default: {default})")
            continue
        if is_bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                           help=f"(default: {default})")
        else:
            p.add_argument(flag, dest=f.name, type=tp, default=default, help=f"(default: {default})")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    s = actions.add_parser("scores", help="per-layer Block Influence and skip-loss, FFN width statistics")
    s.add_argument("--model", required=True, help="model name or folder to score")
    s.add_argument("--teacher", dest="score_teacher", default=None,
                   help="skip-loss against this teacher's vectors (the model must emit its width); "
                        "default: against the model's own unskipped output")
    s.add_argument("--data-dir", dest="score_data_dir", default=None)
    s.add_argument("--queries", type=int, default=512, help="calibration queries from the log (default: 512)")
    s.add_argument("--max-length", dest="score_max_length", type=int, default=64)
    s.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=run_scores)


def run(a):
    from hlm_engine.train.progressive import parse_schedule
    cls, fields = _fields()
    kw = {f.name: getattr(a, f.name) for f in fields if f.name not in ("schedule", "refine_steps") + _SKIPPED}
    if a.refine_steps is not None:
        kw.update(refine_steps=a.refine_steps, refine=True)
    if a.schedule is not None:
        kw["schedule"] = parse_schedule(a.schedule)
    state = cls(**kw)
    from hlm_engine.train.progressive import run_progressive
    out = run_progressive(state)
    print(_summary(out))
    print(f"final model: {out['final_model']}  (steps.json in {state.out_dir})")
    return 0


def _summary(state: dict) -> str:
    rows = ["| step | layers | widths | layer params | distance | R@100 rec. | refined R@100 rec. |",
            "|---|---|---|---|---|---|---|"]
    for e in state["steps"]:
        rec = e.get("recovery", {}).get("R@100")
        rrec = e.get("refine", {}).get("recovery", {}).get("R@100")
        w = sorted(set(e["widths"]))
        rows.append(f"| {e['step']} | {e['num_layers']} | {'/'.join(map(str, w))} | {e['layer_params']:,} | "
                    f"{e['distance']:.4f} | {'' if rec is None else f'{rec:.3f}'} | "
                    f"{'' if rrec is None else f'{rrec:.3f}'} |")
    return "\n".join(rows)


def run_scores(a):
    from hlm_engine.retrieval.data import load_query_log
    from hlm_engine.train import prune as P
    from hlm_engine.train.common import check_folder, load_encoder
    enc = load_encoder(a.model, a.score_max_length, "model")
    seen, texts = set(), []
    for q in load_query_log(a.score_data_dir):
        q = q.strip()
        if q and q not in seen:
            seen.add(q)
            texts.append(q)
    import numpy as np
    texts = [texts[i] for i in np.sort(np.random.default_rng(0).permutation(len(texts))[: a.queries])]
    bi, acts = P.calibration_stats(enc, texts, progress=True)
    if a.score_teacher:
        folder, t_dim = check_folder(a.score_teacher, "teacher")
        if t_dim != enc.dim:
            raise ValueError(f"{a.model} emits {enc.dim}-d vectors but teacher {a.score_teacher} is {t_dim}-d: "
                             "score an aligned student, or leave out --teacher")
        from hlm_engine.encoder import Encoder
        targets = Encoder.from_pretrained(folder, backend="torch", max_length=a.score_max_length).encode(texts)
        against = f"teacher {a.score_teacher}"
    else:
        targets = enc.encode(texts)
        against = "its own unskipped output"
    skip = P.layer_skip_loss(enc, texts, targets)
    stats = P.ffn_stats(acts)
    if a.as_json:
        print(json.dumps({"block_influence": bi.tolist(), "skip_loss": skip.tolist(), "skip_loss_against": against,
                          "ffn": stats, "queries": len(texts)}, indent=2))
        return 0
    print(f"{a.model}: {enc.config.num_layers} layers, {len(texts)} calibration queries; "
          f"skip-loss = MSE to {against} with the layer skipped")
    print("| layer | Block Influence | BI rank | skip-loss | FFN width | mean |a| | units for 90% |")
    print("|---|---|---|---|---|---|---|")
    rank = np.argsort(np.argsort(-bi)) + 1
    for i, s in enumerate(stats):
        print(f"| {i} | {bi[i]:.5f} | {rank[i]} | {skip[i]:.5f} | {s['width']} | {s['mean']:.4f} | "
              f"{s['units_for_90pct']} |")
    return 0

"""`hlm train teacher|align|refine`: the three HARNESS-LM phases. Flags mirror each phase's flat config
dataclass field for field (`--batch-size` sets batch_size); run under `torchrun` for data parallelism.

    hlm train teacher --steps 200 --out-dir runs/teacher
    hlm train align   --student minilm --teacher mpnet --out-dir runs/align
    hlm train refine  --student runs/align/model --out-dir runs/refine [--resume]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing


def _phases():
    from hlm_engine.train.align import AlignConfig, train_align
    from hlm_engine.train.refine import RefineConfig, train_refine
    from hlm_engine.train.teacher import TeacherConfig, train_teacher
    return {"teacher": (TeacherConfig, train_teacher, "fine-tune the teacher with masked InfoNCE + hard negatives"),
            "align": (AlignConfig, train_align, "regress the student onto cached teacher query embeddings"),
            "refine": (RefineConfig, train_refine, "InfoNCE for student queries vs frozen teacher documents")}


def _flag_type(tp):
    """(argparse type, is_bool) of a dataclass field annotation such as 'int | None'."""
    if isinstance(tp, str):
        tp = eval(tp, {"typing": typing})  # annotations are strings under `from __future__ import annotations`
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    return base, base is bool


def register(sub):
    p = sub.add_parser("train", help="train: teacher | align | refine (HARNESS-LM phases)")
    phases = p.add_subparsers(dest="phase", required=True, metavar="PHASE")
    for name, (cls, fn, doc) in _phases().items():
        sp = phases.add_parser(name, help=doc, description=sys.modules[fn.__module__].__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            tp, is_bool = _flag_type(f.type)
            if is_bool:
                sp.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"(default: {f.default})")
            else:
                sp.add_argument(flag, dest=f.name, type=tp, default=f.default, help=f"(default: {f.default})")
        sp.set_defaults(func=run, _phase_cls=cls, _phase_fn=fn)


def run(a):
    cls, fn = a._phase_cls, a._phase_fn
    cfg = cls(**{f.name: getattr(a, f.name) for f in dataclasses.fields(cls)})
    from hlm_engine.train import distributed
    try:
        log = fn(cfg)
        main = distributed.rank() == 0
    finally:
        distributed.cleanup()
    if not main:
        return 0
    keys = ("phase", "steps_done", "loss_first10", "loss_last10", "distance_before", "distance_after")
    print({k: log[k] for k in keys if k in log})
    for k in ("dev_before", "dev_after"):
        if log.get(k):
            print(k, {m: round(v, 4) for m, v in log[k].items() if m in ("R@10", "R@100", "nDCG@10", "MRR@10")})
    return 0

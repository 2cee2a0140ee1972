"""The report's "Reproduce at full scale on GPUs" section: each step of the pipeline mapped to its command.

The commands are checked against this build's own `hlm` parser when the report is written (a command the
CLI would reject is flagged), and the device notes come from the parser too: a step whose command has a
`--device` option runs on the GPU, one without it runs where the code puts it today (said plainly).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shlex

N = "$NGPU"                                  # GPUs per node
HD = "$HLM_DATA_DIR/homedepot"
TORCHRUN = f"torchrun --nproc-per-node {N} -m hlm_engine.cli"

# (step, command; "hlm ..." or a torchrun line, checked after the program name, note)
STEPS = [
    ("Install (GPU extras: faiss-gpu, cupy)", 'make venv && .venv/bin/pip install -e ".[gpu]" && hlm models install',
     None),
    ("Teacher fine-tune (optional)", f"{TORCHRUN} train teacher --teacher mpnet --steps 2000 --batch-size 256 "
                                     "--out-dir runs/full/teacher", "train"),
    ("Encode all products with the teacher", f"{TORCHRUN} encode-corpus --model mpnet --corpus {HD}/products.tsv "
                                             "--out runs/full/corpus --batch-size 512", "encode"),
    ("ANN index over the teacher vectors", "hlm index build --embeddings runs/full/corpus --out runs/full/index "
                                           "--device cuda", "index"),
    ("Align the student on the whole query log", f"{TORCHRUN} train align --student minilm --teacher mpnet "
                                                  "--steps 3000 --batch-size 512 --out-dir runs/full/align", "train"),
    ("Refine against the frozen teacher vectors", f"{TORCHRUN} train refine --student runs/full/align/model "
                                                   "--teacher mpnet --doc-embeddings runs/full/corpus --steps 1000 "
                                                   "--batch-size 256 --out-dir runs/full/refine", "train"),
    ("Progressive pruning (one process)", "hlm prune --student runs/full/align/model --teacher mpnet "
                                          "--schedule 4x1536,3x1024,2x1024 --align-steps 3000 --evaluate "
                                          "--out runs/full/prune", "single"),
    ("Design-choice study (one process)", "hlm study --config bench/study/default.toml --set align_steps=3000 "
                                          "--set refine_steps=1000 --set log_queries=all", "single"),
    ("Quality over the index", f"hlm eval --index runs/full/index --model runs/full/refine/model --queries "
                               f"{HD}/queries_dev.tsv --qrels {HD}/qrels_dev.tsv --teacher mpnet", "query"),
    ("Report", "hlm report --readme README.md", None),
]


def _parser():
    from hlm_engine.cli import build_parser
    return build_parser()


def _subparser(p: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The innermost subcommand parser named by argv (e.g. ['train', 'align', ...])."""
    for tok in argv:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or tok not in subs[0].choices:
            break
        p = subs[0].choices[tok]
    return p


def check_command(cmd: str) -> tuple[bool, set[str]]:
    """(this build's `hlm` parser accepts the command, the option strings of its subcommand). Commands that
    are not `hlm`/torchrun lines are accepted as they are."""
    words = shlex.split(cmd.split("&&")[-1] if cmd.startswith("make") else cmd)
    if words[:1] == ["torchrun"]:
        words = ["hlm"] + words[words.index("hlm_engine.cli") + 1:]
    if words[:1] != ["hlm"]:
        return True, set()
    p = _parser()
    argv = words[1:]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            p.parse_args(argv)
        ok = True
    except SystemExit:
        ok = False
    sub = _subparser(p, argv)
    return ok, {o for a in sub._actions for o in a.option_strings}


def _trains_on_gpu() -> bool:
    from hlm_engine.train.align import AlignConfig
    return any(f.name == "device" for f in dataclasses.fields(AlignConfig))


TRAIN_NOTE = ("¹ The training phases load their models without a device (`train/common.load_encoder`), so under "
              "torchrun they are CPU data parallel (gloo). On a CUDA host `train/distributed.setup` picks NCCL, "
              "which cannot gather CPU tensors: hide the GPUs (`CUDA_VISIBLE_DEVICES=`) until the phases take a "
              "device.")


def _note(kind: str | None, flags: set[str]) -> str:
    if kind is None:
        return ""
    if "--device" in flags:
        return "GPU (`--device cuda`; faiss-gpu from the `gpu` extra)" if kind == "index" else "GPU (`--device`)"
    if kind in ("train", "single"):
        if _trains_on_gpu():
            return "GPU, one device per process (DDP)" if kind == "train" else "GPU"
        return "CPU processes today¹" if kind == "train" else "CPU today¹"
    if kind == "encode":
        return ("shards split over the torchrun processes, each on the CPU today (no `--device` option: "
                "`Encoder.from_pretrained` defaults to the CPU)")
    return "CPU today (no `--device` option); the search uses faiss as built"


def reproduce_section(level: int = 2) -> str:
    h = "#" * level
    lines = [f"{h} Reproduce at full scale on GPUs", "",
             f"One node with `{N}` GPUs, `HLM_DATA_DIR` pointing at the full data. Each step is one command; "
             "every command below was checked against this build's `hlm` parser when this report was written, "
             "and the device column says where the code runs it today.", "",
             "| step | command | device |", "|---|---|---|"]
    for step, cmd, kind in STEPS:
        ok, flags = check_command(cmd)
        mark = "" if ok else " ⚠ rejected by this build's CLI"
        lines.append(f"| {step} | `{cmd}`{mark} | {_note(kind, flags)} |")
    if not _trains_on_gpu():
        lines += ["", TRAIN_NOTE]
    lines += ["", "Global batch sizes must divide by the number of processes. Training phases and corpus encoding "
                  "resume where they stopped (rerun the same command); the index build and the study are single "
                  "processes."]
    return "\n".join(lines)

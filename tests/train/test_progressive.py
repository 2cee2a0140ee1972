"""Progressive pruning on a tiny budget (random-init 3-layer student, 2-layer teacher of another width,
the packaged sample data): the run completes, every step's model is dense and loads in both backends,
the kept layers are the top Block-Influence ones, and an interrupted run resumes without recomputing the
finished step and ends bit-identical to an uninterrupted one. A uniform-width pruned BERT folder is also
a valid `transformers` BertModel folder."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hlm_engine import Encoder
from hlm_engine.config import preset
from hlm_engine.hub import resolve
from hlm_engine.models.packing import pack
from hlm_engine.train.progressive import ProgressiveConfig, parse_schedule, run_progressive
from hlm_engine.train.prune import prune_to

QUERIES = ["cordless drill", "white ceiling paint", "3/4 in. copper pipe fitting", "toilet"]


def _student(path: str, inter: int = 256) -> str:
    cfg = preset("minilm-l6", num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=4, head_dim=16,
                 intermediate_sizes=[inter] * 3, max_length=32)
    Encoder.from_config(cfg, os.path.join(resolve("minilm"), "tokenizer.json"), seed=3).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return _student(str(tmp_path_factory.mktemp("prog") / "student"))


def _cfg(student, teacher, out, **kw):
    base = dict(student=student, teacher=teacher, out_dir=str(out), schedule=[(2, 128), (1, 64)], steps=2,
                batch_size=16, lr=2e-3, warmup_steps=1, holdout=32, max_queries=None, max_length=32,
                calibration_queries=48, evaluate=True, max_products=None, refine=True, refine_steps=1,
                refine_batch_size=8, save_every=0)
    base.update(kw)
    return ProgressiveConfig(**base)


def _weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def test_parse_schedule():
    assert parse_schedule("4x1536, 3x1024,2") == [(4, 1536), (3, 1024), (2, None)]
    with pytest.raises(ValueError, match="bad schedule step"):
        parse_schedule("4by1536")


def test_schedule_cannot_grow(student, tiny_models, tmp_path):
    with pytest.raises(ValueError, match="cannot add layers"):
        run_progressive(_cfg(student, tiny_models["teacher"], tmp_path, schedule=[(2, 128), (3, 64)]))


def test_progressive_run_completes_and_resumes(student, tiny_models, tmp_path):
    straight = run_progressive(_cfg(student, tiny_models["teacher"], tmp_path / "a"))
    assert straight["finished"] and [e["step"] for e in straight["steps"]] == [0, 1, 2]
    s0, s1, s2 = straight["steps"]
    assert s0["aligned_here"] and s0["num_layers"] == 3 and s0["widths"] == [256] * 3
    for e, (n, w) in ((s1, (2, 128)), (s2, (1, 64))):
        assert e["num_layers"] == n and e["widths"] == [w] * n
        # the kept layers are exactly the top-n by the recorded Block Influence, in model order
        bi = np.asarray(e["block_influence"])
        assert e["kept_layers"] == sorted(np.argsort(-bi)[:n].tolist())
        assert len(e["skip_loss"]) == len(bi) and 0 < min(e["importance_kept"]) <= 1
        assert e["layer_params"] < e["parent_shape"]["layer_params"]
        assert np.isfinite(e["distance"]) and "R@100" in e["recovery"]
    assert "R@100" in straight["teacher"]["dev"]
    assert straight["final_model"] == s2["refine"]["model"]
    on_disk = json.load(open(tmp_path / "a" / "steps.json"))
    assert on_disk["finished"] and len(on_disk["steps"]) == 3

    # Dense models: they load with per-layer widths and give the same vectors through both backends.
    final = Encoder.from_pretrained(straight["final_model"], backend="torch")
    assert final.config.num_layers == 1 and final.config.intermediate_sizes == [64] and final.dim == 96
    tri = Encoder.from_pretrained(straight["final_model"], backend="triton")
    np.testing.assert_allclose(tri.encode(QUERIES[:2]), final.encode(QUERIES[:2]), atol=1e-4, rtol=0)
    assert Encoder.from_pretrained(s1["model"], backend="torch").config.intermediate_sizes == [128, 128]

    # Interrupted after step 1, then resumed: step 1 is not recomputed and the result is identical.
    b = tmp_path / "b"
    first = run_progressive(_cfg(student, tiny_models["teacher"], b, stop_after_steps=1))
    assert not first["finished"] and len(first["steps"]) == 2 and not os.path.exists(b / "step2")
    step1_file = b / "step1" / "align" / "model" / "model.safetensors"
    stamp = os.stat(step1_file).st_mtime_ns
    resumed = run_progressive(_cfg(student, tiny_models["teacher"], b, resume=True))
    assert resumed["finished"] and os.stat(step1_file).st_mtime_ns == stamp
    assert resumed["steps"][1] == first["steps"][1]
    x, y = _weights(straight["final_model"]), _weights(resumed["final_model"])
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert resumed["steps"][2]["kept_layers"] == s2["kept_layers"]
    # resuming under another schedule is refused before any work
    with pytest.raises(ValueError, match="step 1 was pruned"):
        run_progressive(_cfg(student, tiny_models["teacher"], b, schedule=[(2, 64), (1, 64)], resume=True))


def test_uniform_pruned_bert_is_a_transformers_folder(student, tmp_path):
    from transformers import BertModel
    enc = Encoder.from_pretrained(student, backend="torch")
    small, _ = prune_to(enc, QUERIES, num_layers=2, ffn_width=128, batch_size=2)
    small.save_pretrained(str(tmp_path / "p"))
    hf = BertModel.from_pretrained(str(tmp_path / "p")).eval()
    assert hf.config.num_hidden_layers == 2 and hf.config.intermediate_size == 128
    ids = small.tokenize(QUERIES[2:3])[0]
    with torch.no_grad():
        ours = small.model(pack([ids]))
        theirs = hf(input_ids=torch.tensor([ids])).last_hidden_state[0]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5, rtol=0)


def test_progressive_realigns_on_corpus_titles(student, tiny_models, tmp_path):
    state = run_progressive(_cfg(student, tiny_models["teacher"], tmp_path / "t", schedule=[(2, 128)],
                                 refine=False, align_on_titles=True))
    assert state["finished"]
    titles = (tmp_path / "t" / "titles.tsv").read_text().splitlines()
    assert titles[0] == "id\ttext" and len(titles) == state["teacher"]["products"] + 1
    log = json.load(open(tmp_path / "t" / "step1" / "align" / "run_log.json"))
    assert log["extra_texts"] == state["teacher"]["products"]
    with pytest.raises(ValueError, match="align_on_titles needs evaluate"):
        run_progressive(_cfg(student, tiny_models["teacher"], tmp_path / "u", evaluate=False, align_on_titles=True))


def test_final_step_gets_its_own_realignment_budget(student, tiny_models, tmp_path):
    """`final_steps`: the shape that ships is re-aligned longer than the intermediate ones."""
    state = run_progressive(_cfg(student, tiny_models["teacher"], tmp_path / "f", steps=2, final_steps=3,
                                 refine=False, evaluate=False))
    assert state["finished"]
    done = [json.load(open(tmp_path / "f" / f"step{k}" / "align" / "run_log.json"))["steps_done"] for k in (1, 2)]
    assert done == [2, 3]

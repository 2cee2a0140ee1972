"""Tiny end-to-end runs of the three phases on the packaged sample data (random-init 2-layer models):
losses fall, the aligned student moves toward the teacher, checkpoints load back to the same embeddings,
and an interrupted run resumes to bit-identical weights."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hlm_engine import Encoder
from hlm_engine.train.align import AlignConfig, train_align
from hlm_engine.train.common import attach_projection
from hlm_engine.train.refine import RefineConfig, train_refine
from hlm_engine.train.teacher import TeacherConfig, train_teacher

pytestmark = pytest.mark.usefixtures("sample_data")

QUERIES = ["cordless drill", "white ceiling paint", "3/4 in. copper pipe fitting", "toilet"]


def _mean(xs):
    return float(np.mean(xs))


def _align_cfg(tiny, out, **kw):
    base = dict(student=tiny["student"], teacher=tiny["teacher"], out_dir=str(out), holdout=64, steps=12,
                batch_size=16, lr=2e-3, warmup_steps=1, proj_init="random", save_every=0,
                targets_dir=os.path.join(tiny["shared"], "targets"))
    base.update(kw)
    return AlignConfig(**base)


def _refine_cfg(tiny, student, out, **kw):
    base = dict(student=student, teacher=tiny["teacher"], out_dir=str(out), steps=4, batch_size=8, lr=1e-3,
                warmup_steps=1, num_negatives=3, shared_negatives=32, save_every=0, evaluate=False,
                doc_embeddings=os.path.join(tiny["shared"], "teacher_docs"))
    base.update(kw)
    return RefineConfig(**base)


def _weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def test_teacher_phase_loss_falls(tiny_models, tmp_path):
    log = train_teacher(TeacherConfig(teacher=tiny_models["teacher"], out_dir=str(tmp_path), steps=10,
                                      batch_size=8, lr=1e-3, warmup_steps=1, save_every=0, max_length=32))
    assert log["finished"] and len(log["losses"]) == 10
    assert _mean(log["losses"][-3:]) < _mean(log["losses"][:3])
    assert set(log["dev_before"]) >= {"R@10", "R@100"} and "R@100" in log["dev_after"]
    for f in ("run_log.json", "loss.png", "model/model.safetensors", "checkpoint/trainer_state.pt"):
        assert os.path.exists(tmp_path / f), f
    Encoder.from_pretrained(str(tmp_path / "model"), backend="torch")


def test_align_moves_student_to_teacher(tiny_models, tmp_path):
    log = train_align(_align_cfg(tiny_models, tmp_path))
    assert _mean(log["losses"][-3:]) < _mean(log["losses"][:3])
    assert log["distance_after"] < 0.8 * log["distance_before"]
    student = Encoder.from_pretrained(str(tmp_path / "model"), backend="torch")
    assert student.dim == 96 and student.config.output_dim == 96  # folded 64 -> 96 head
    meta = json.load(open(tmp_path / "model" / "hlm_alignment.json"))
    assert meta["teacher"] == tiny_models["teacher"] and len(meta["teacher_checksum"]) == 64


def test_projection_checkpoint_roundtrip(tiny_models, tmp_path):
    enc = Encoder.from_pretrained(tiny_models["student"], backend="torch")
    attach_projection(enc, 96, "student")
    with torch.no_grad():
        enc.model.proj.weight.add_(0.01)
    want = enc.encode(QUERIES)
    enc.save_pretrained(str(tmp_path / "m"))
    got = Encoder.from_pretrained(str(tmp_path / "m"), backend="torch").encode(QUERIES)
    assert got.shape == (4, 96)
    np.testing.assert_array_equal(got, want)


def test_align_resume_is_exact(tiny_models, tmp_path):
    straight = train_align(_align_cfg(tiny_models, tmp_path / "a", steps=6))
    first = train_align(_align_cfg(tiny_models, tmp_path / "b", steps=6, stop_after=3))
    assert not first["finished"] and first["steps_done"] == 3 and not os.path.exists(tmp_path / "b" / "model")
    second = train_align(_align_cfg(tiny_models, tmp_path / "b", steps=6, resume=True))
    assert second["finished"] and second["steps_this_run"] == 3
    assert second["losses"] == straight["losses"]
    a, b = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_refine_resume_is_exact_and_baseline_gets_a_head(tiny_models, tmp_path):
    # From the raw 64-d student: the direct asymmetric fine-tuning baseline (fresh 64 -> 96 head).
    straight = train_refine(_refine_cfg(tiny_models, tiny_models["student"], tmp_path / "a"))
    train_refine(_refine_cfg(tiny_models, tiny_models["student"], tmp_path / "b", stop_after=2))
    resumed = train_refine(_refine_cfg(tiny_models, tiny_models["student"], tmp_path / "b", resume=True))
    assert resumed["losses"] == straight["losses"]
    a, b = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert "hlm_projection.weight" in a and all(torch.equal(a[k], b[k]) for k in a)


def test_refine_loss_falls_with_eval(tiny_models, tmp_path):
    log = train_refine(_refine_cfg(tiny_models, tiny_models["student"], tmp_path, steps=12, evaluate=True,
                                   lr=3e-3))
    assert _mean(log["losses"][-3:]) < _mean(log["losses"][:3])
    assert log["dev_after"]["R@100"] >= 0.0 and log["dev_before"]["queries"] > 0


def test_teacher_top_layers_only(tiny_models, tmp_path):
    """trainable_layers=1: the embeddings and the lower layer keep their weights; the top layer moves."""
    before = _weights(tiny_models["teacher"])
    train_teacher(TeacherConfig(teacher=tiny_models["teacher"], out_dir=str(tmp_path), steps=3, batch_size=8,
                                lr=1e-3, warmup_steps=1, save_every=0, max_length=32, evaluate=False,
                                trainable_layers=1))
    after = _weights(str(tmp_path / "model"))
    n_layers = json.load(open(os.path.join(tiny_models["teacher"], "config.json")))["num_hidden_layers"]
    top = f"layer.{n_layers - 1}."  # saved in the HF layout (encoder.layer.N.*)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(top in k for k in moved), sorted(moved)
    with pytest.raises(ValueError, match="trainable_layers must be in 1.."):
        train_teacher(TeacherConfig(teacher=tiny_models["teacher"], out_dir=str(tmp_path / "bad"), steps=1,
                                    evaluate=False, trainable_layers=99))


def test_teacher_frozen_bottom_is_the_full_forward(tiny_models, tmp_path, monkeypatch):
    """Top layers only: the frozen bottom's states, computed once and cached, train the same teacher and
    give the same corpus vectors (off the shelf and fine-tuned) as running every layer each time."""
    from hlm_engine.retrieval.corpus import load_embeddings
    from hlm_engine.train import teacher
    kw = dict(teacher=tiny_models["teacher"], steps=4, batch_size=8, lr=1e-3, warmup_steps=1, save_every=0,
              max_length=32, trainable_layers=1)
    fast = train_teacher(TeacherConfig(out_dir=str(tmp_path / "fast"), **kw))
    monkeypatch.setattr(teacher, "FROZEN_BOTTOM_MAX_BYTES", 0)  # no cache: the full forward everywhere
    full = train_teacher(TeacherConfig(out_dir=str(tmp_path / "full"), **kw))
    np.testing.assert_allclose(fast["losses"], full["losses"], rtol=1e-4)
    for sub in ("corpus_base", "corpus_finetuned"):
        ids_a, a = load_embeddings(str(tmp_path / "fast" / "cache" / sub))
        ids_b, b = load_embeddings(str(tmp_path / "full" / "cache" / sub))
        assert list(ids_a) == list(ids_b)
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-3)
    assert fast["dev_after"]["R@100"] == pytest.approx(full["dev_after"]["R@100"], abs=0.02)


def test_refine_alignment_anchor_keeps_student_near_teacher(tiny_models, tmp_path):
    """The ℓ2 anchor in refine: with a large weight the refined student stays closer to the teacher's query
    vectors than plain InfoNCE leaves it; a negative weight is refused."""
    aligned = train_align(_align_cfg(tiny_models, tmp_path / "align"))
    assert aligned["finished"]
    start = str(tmp_path / "align" / "model")
    teacher = Encoder.from_pretrained(tiny_models["teacher"], backend="torch")
    t = teacher.encode(QUERIES)

    def dist(folder):
        s = Encoder.from_pretrained(folder, backend="torch").encode(QUERIES)
        return float(((s - t) ** 2).sum(1).mean())

    plain = train_refine(_refine_cfg(tiny_models, start, tmp_path / "plain", steps=8, align_weight=0.0))
    anchored = train_refine(_refine_cfg(tiny_models, start, tmp_path / "anchored", steps=8, align_weight=20.0))
    assert plain["finished"] and anchored["finished"]
    assert dist(str(tmp_path / "anchored" / "model")) < dist(str(tmp_path / "plain" / "model"))
    with pytest.raises(ValueError, match="align_weight"):
        train_refine(_refine_cfg(tiny_models, start, tmp_path / "neg", align_weight=-1.0))


def test_align_on_extra_texts(tiny_models, tmp_path):
    """Extra (id, text) rows are regressed alongside the log, with their teacher vectors cached by id."""
    tsv = tmp_path / "titles.tsv"
    tsv.write_text("id\ttext\n" + "".join(f"p{i}\t{t} \"{i}\" in.\n" for i, t in enumerate(QUERIES * 5)))
    log = train_align(_align_cfg(tiny_models, tmp_path / "out", steps=4, extra_texts_file=str(tsv),
                                 extra_targets_dir=str(tmp_path / "extra_targets")))
    assert log["finished"] and log["extra_texts"] == 20
    assert os.path.exists(tmp_path / "extra_targets" / "manifest.json")
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\ttitle\np1\tdrill\n")
    with pytest.raises(ValueError, match="text"):
        train_align(_align_cfg(tiny_models, tmp_path / "bad_out", steps=1, extra_texts_file=str(bad)))

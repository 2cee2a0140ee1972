"""Bad input fails at start with a message naming the problem — before any checkpoint is written."""
import os

import pytest

from hlm_engine.train.align import AlignConfig, train_align
from hlm_engine.train.refine import RefineConfig, train_refine
from hlm_engine.train.teacher import TeacherConfig, train_teacher

pytestmark = pytest.mark.usefixtures("sample_data")


def _align(tiny, tmp_path, **kw):
    cfg = dict(student=tiny["student"], teacher=tiny["teacher"], out_dir=str(tmp_path / "out"), holdout=8,
               steps=2, batch_size=4)
    cfg.update(kw)
    return AlignConfig(**cfg)


def _nothing_written(tmp_path):
    assert not os.path.exists(tmp_path / "out" / "checkpoint")


def test_empty_query_log(tiny_models, tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("source\tquery\n")
    with pytest.raises(ValueError, match="0 usable queries: nothing to align"):
        train_align(_align(tiny_models, tmp_path, queries_file=str(f)))
    _nothing_written(tmp_path)


def test_missing_column(tiny_models, tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("source\ttext\nx\tdrill\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['query'\]"):
        train_align(_align(tiny_models, tmp_path, queries_file=str(f)))


def test_tokenizer_mismatch(tiny_models, tiny_factory, tmp_path):
    bad = tiny_factory(str(tmp_path / "small_vocab"), 64, 128, seed=3, vocab_size=1000)
    with pytest.raises(ValueError, match="student tokenizer mismatch"):
        train_align(_align(tiny_models, tmp_path, student=bad, queries_file=None))
    with pytest.raises(ValueError, match="teacher tokenizer mismatch"):
        train_align(_align(tiny_models, tmp_path, teacher=bad))
    _nothing_written(tmp_path)


def test_dimension_mismatch(tiny_models, tmp_path):
    # A student already carrying a 32-d head cannot be aligned to a 96-d teacher.
    from hlm_engine import Encoder
    from hlm_engine.train.common import attach_projection
    enc = Encoder.from_pretrained(tiny_models["student"], backend="torch")
    attach_projection(enc, 32, "student")
    enc.save_pretrained(str(tmp_path / "s32"))
    with pytest.raises(ValueError, match="dimension mismatch"):
        train_align(_align(tiny_models, tmp_path, student=str(tmp_path / "s32")))
    with pytest.raises(ValueError, match="dimension mismatch"):
        train_refine(RefineConfig(student=str(tmp_path / "s32"), teacher=tiny_models["teacher"],
                                  out_dir=str(tmp_path / "out"), steps=2, evaluate=False))
    _nothing_written(tmp_path)


def test_no_positive_pairs_and_bad_settings(tiny_models, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no training pairs"):
        train_teacher(TeacherConfig(teacher=tiny_models["teacher"], out_dir=str(tmp_path / "out"), threshold=9.0))
    with pytest.raises(ValueError, match="unknown alignment loss"):
        train_align(_align(tiny_models, tmp_path, loss="huber"))
    from hlm_engine.train import distributed
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="not divisible"):
        distributed.local_slice(3)  # 3 queries per step cannot split over 2 ranks (checked before step 0)
    _nothing_written(tmp_path)

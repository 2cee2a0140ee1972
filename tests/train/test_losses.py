"""The losses: formulas on hand-made inputs, masking rules, gradients, input errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from hlm_engine.train.losses import InfoNCEConfig, alignment_loss, infonce_loss


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_infonce_matches_formula_single_query():
    # One query, its positive and one negative, no in-batch terms: -log(e^{s+/τ} / (e^{s+/τ} + e^{s-/τ})).
    q = _unit([1.0, 0.0])
    docs = _unit([0.8, 0.6], [0.6, 0.8])
    cfg = InfoNCEConfig(temperature=0.1, margin=0.1, query_query=False, doc_doc=False)
    loss = infonce_loss(q, docs, torch.tensor([0]), torch.tensor([0, 1]), cfg=cfg)
    expect = -math.log(math.exp(8.0) / (math.exp(8.0) + math.exp(6.0)))
    assert loss.item() == pytest.approx(expect, rel=1e-5)


def test_infonce_masks_false_negatives():
    q = _unit([1.0, 0.0])
    pos = [0.6, 0.8]        # s+ = 0.6
    above = [0.95, 0.31]    # s ≈ 0.95 > s+ + margin: a likely unlabeled positive, masked
    dup = [0.9, 0.436]      # same text as the positive (key 0): masked
    cfg = InfoNCEConfig(temperature=0.1, margin=0.1, query_query=False, doc_doc=False)
    alone = infonce_loss(q, _unit(pos), torch.tensor([0]), torch.tensor([0]), cfg=cfg)
    both = infonce_loss(q, _unit(pos, above, dup), torch.tensor([0]), torch.tensor([0, 1, 0]), cfg=cfg)
    assert both.item() == pytest.approx(alone.item(), abs=1e-6) and alone.item() == pytest.approx(0.0, abs=1e-6)
    kept = infonce_loss(q, _unit(pos, above), torch.tensor([0]), torch.tensor([0, 1]),
                        cfg=InfoNCEConfig(temperature=0.1, margin=0.5, query_query=False, doc_doc=False))
    assert kept.item() > 1.0  # with a wider margin the same document counts as a negative
    known = infonce_loss(q, _unit(pos, [0.5, 0.866]), torch.tensor([0]), torch.tensor([0, 1]),
                         known_pos=torch.tensor([[False, True]]), cfg=cfg)
    assert known.item() == pytest.approx(0.0, abs=1e-6)


def test_infonce_in_batch_terms_and_gradient():
    torch.manual_seed(0)
    q = torch.randn(4, 8, requires_grad=True)
    docs = torch.randn(12, 8)
    keys = torch.arange(12)
    args = (q, docs, torch.arange(4), keys, torch.arange(4))
    lo = infonce_loss(*args, cfg=InfoNCEConfig(query_query=False, doc_doc=False, margin=10.0))
    hi = infonce_loss(*args, cfg=InfoNCEConfig(margin=10.0))
    assert hi.item() > lo.item()  # q–q and d–d negatives enlarge the denominator
    hi.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_infonce_bad_shapes():
    with pytest.raises(ValueError, match="shape mismatch"):
        infonce_loss(torch.randn(2, 4), torch.randn(3, 5), torch.arange(2), torch.arange(3))
    with pytest.raises(ValueError, match="pos_index"):
        infonce_loss(torch.randn(2, 4), torch.randn(3, 4), torch.arange(3), torch.arange(3))


def test_alignment_variants():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert alignment_loss(s, t, "l2").item() == pytest.approx((2.0 + 1.0) / 2)
    assert alignment_loss(s, t, "mse").item() == pytest.approx((2.0 + 1.0) / 4)
    assert alignment_loss(s, t, "cosine").item() == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="projection"):
        alignment_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown alignment loss"):
        alignment_loss(s, t, "huber")

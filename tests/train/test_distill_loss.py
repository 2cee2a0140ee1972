"""The contrastive-distillation alignment objective ("infonce"): the formula on hand-made vectors, its
invariances, the direction of its gradient, and a tiny align run whose loss falls."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hlm_engine.train.losses import ALIGN_LOSSES, alignment_loss


def test_infonce_distill_matches_formula():
    # Student i must pick teacher i among the batch's teacher vectors: softmax over cos(s_i, t_j)/τ.
    s = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    tau = 0.1
    cos = F.normalize(s, dim=-1) @ F.normalize(t, dim=-1).T
    expect = -0.5 * sum(math.log(math.exp(cos[i, i] / tau) / sum(math.exp(cos[i, j] / tau) for j in range(2)))
                        for i in range(2))
    assert alignment_loss(s, t, "infonce", temperature=tau).item() == pytest.approx(expect, rel=1e-5)
    assert "infonce" in ALIGN_LOSSES


def test_infonce_distill_invariances_and_bounds():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    base = alignment_loss(s, t, "infonce")
    # Cosine-based: rescaling either side changes nothing (ℓ2 would change).
    assert alignment_loss(3.0 * s, 0.5 * t, "infonce").item() == pytest.approx(base.item(), rel=1e-5)
    # A student that already points at its own teacher vectors, far from the others, costs ~0.
    eye = torch.eye(8, 16)
    assert alignment_loss(eye, eye, "infonce").item() < 1e-6
    # Chance level for orthogonal-but-wrong matches: log(B).
    perm = eye[torch.roll(torch.arange(8), 1)]
    assert alignment_loss(perm, eye, "infonce").item() > math.log(8)
    with pytest.raises(ValueError, match="temperature"):
        alignment_loss(s, t, "infonce", temperature=0.0)


def test_infonce_distill_gradient_pulls_toward_own_teacher():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
    alignment_loss(s, t, "infonce").backward()
    with torch.no_grad():
        moved = F.normalize(s - 0.01 * s.grad, dim=-1)
        before = (F.normalize(s, dim=-1) * t).sum(-1)
        after = (moved * t).sum(-1)
    assert torch.all(after > before)


@pytest.mark.usefixtures("sample_data")
def test_align_phase_runs_with_infonce(tiny_models, tmp_path):
    from hlm_engine.train.align import AlignConfig, train_align
    log = train_align(AlignConfig(student=tiny_models["student"], teacher=tiny_models["teacher"],
                                  out_dir=str(tmp_path), holdout=64, steps=12, batch_size=16, lr=2e-3,
                                  warmup_steps=1, proj_init="random", save_every=0, loss="infonce",
                                  targets_dir=os.path.join(tiny_models["shared"], "targets")))
    assert log["finished"]
    assert float(np.mean(log["losses"][-3:])) < float(np.mean(log["losses"][:3]))

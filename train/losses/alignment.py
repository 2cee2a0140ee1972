"""Embedding alignment of a student to frozen teacher vectors (the HARNESS-LM query-tower phase).

    l2:      L = 1/B Σ_i ‖f_S(q_i) − f_T(q_i)‖²          (the paper's objective, summed over dims)
    mse:     L = 1/(B·d) Σ_i ‖f_S(q_i) − f_T(q_i)‖²       (same minimiser, per-coordinate scale)
    cosine:  L = 1/B Σ_i (1 − cos(f_S(q_i), f_T(q_i)))
    infonce: L = −1/B Σ_i log( e^{cos(s_i, t_i)/τ} / Σ_j e^{cos(s_i, t_j)/τ} )    (contrastive distillation)
             s_i = f_S(q_i), t_j = f_T(q_j): each student query must pick its own teacher vector out of the
             batch's teacher query vectors (the others are in-batch negatives), τ = 0.05 by default.
             Unlike ℓ2 it only asks for the right *ranking* of teacher vectors, not the same point: the
             design-choice study compares the two (HARNESS-LM §5; cf. CLIP-style distillation).

Shapes: student [B, d], teacher [B, d] (teacher targets are constants). When the student is narrower than
the teacher (384 vs 768), f_S already includes the learned linear projection: the projection lives in the
student model (`proj`), so the saved student emits teacher-space vectors directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN_LOSSES = ("l2", "mse", "cosine", "infonce")
DISTILL_TEMPERATURE = 0.05


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l2",
                   temperature: float = DISTILL_TEMPERATURE) -> torch.Tensor:
    if kind not in ALIGN_LOSSES:
        raise ValueError(f"unknown alignment loss {kind!r}; choose one of {', '.join(ALIGN_LOSSES)}")
    if student.shape != teacher.shape:
        raise ValueError(f"student embeddings {tuple(student.shape)} and teacher targets {tuple(teacher.shape)} "
                         f"differ in shape (a student projection to the teacher width is needed)")
    s, t = student.float(), teacher.detach().float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    if kind == "infonce":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits = F.normalize(s, dim=-1) @ F.normalize(t, dim=-1).T / temperature   # [B, B]
        return F.cross_entropy(logits, torch.arange(len(s), device=s.device))
    sq = (s - t).pow(2).sum(dim=-1)
    return sq.mean() if kind == "l2" else sq.mean() / s.shape[1]

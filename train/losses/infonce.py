"""Qwen3-Embedding-style InfoNCE with an enlarged, false-negative-masked denominator.

For query i with positive document d_i⁺ (cosine similarity s(·,·), temperature τ):

    L = -1/B Σ_i log( e^{s(q_i,d_i⁺)/τ} / Z_i )
    Z_i = e^{s(q_i,d_i⁺)/τ}
        + Σ_{j ≠ pos(i)} m_ij e^{s(q_i, d_j)/τ}     query–document: the K mined hard negatives of every
                                                     query and the other queries' positives (one pool)
        + Σ_{j ≠ i}      m'_ij e^{s(q_i, q_j)/τ}    query–query
        + Σ_{j ≠ pos(i)} m''_ij e^{s(d_i⁺, d_j)/τ}   document–document

A negative is masked out (m = 0) when its score exceeds s(q_i, d_i⁺) + margin (likely an unlabeled
positive), when its text equals the positive's text (duplicate titles under other ids), or when it is
a known positive of query i (`known_pos`). Reference: Zhang et al. 2025, "Qwen3 Embedding", §3.2.

Shapes: q [B, d], docs [N, d] (the batch's document pool, rows need not be unique), pos_index [B] into
docs, doc_keys [N] int64 text identities, query_keys [B] int64. Inputs are L2-normalised here, so the
dot products are cosines. Works unchanged when docs are frozen precomputed teacher embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class InfoNCEConfig:
    temperature: float = 0.05
    margin: float = 0.1            # mask negatives scoring above s(q, d⁺) + margin
    query_query: bool = True       # q–q in-batch negatives
    doc_doc: bool = True           # d⁺–d in-batch negatives


def _masked(scores: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(drop, float("-inf"))


def infonce_loss(q: torch.Tensor, docs: torch.Tensor, pos_index: torch.Tensor, doc_keys: torch.Tensor,
                 query_keys: torch.Tensor | None = None, known_pos: torch.Tensor | None = None,
                 cfg: InfoNCEConfig = InfoNCEConfig(), return_stats: bool = False):
    """Scalar loss (mean over queries). `known_pos` [B, N] bool marks other judged positives of query i."""
    if q.ndim != 2 or docs.ndim != 2 or q.shape[1] != docs.shape[1]:
        raise ValueError(f"shape mismatch: queries {tuple(q.shape)} vs docs {tuple(docs.shape)}")
    B, N = q.shape[0], docs.shape[0]
    if pos_index.shape != (B,) or doc_keys.shape != (N,):
        raise ValueError(f"pos_index must be [{B}] and doc_keys [{N}], got {tuple(pos_index.shape)}, "
                         f"{tuple(doc_keys.shape)}")
    q = F.normalize(q.float(), dim=-1)
    d = F.normalize(docs.float(), dim=-1)
    rows = torch.arange(B, device=q.device)
    s_qd = q @ d.T                                       # [B, N]
    s_pos = s_qd[rows, pos_index]                        # [B]
    limit = (s_pos + cfg.margin).detach()[:, None]       # the mask is a selection, not a gradient path
    pos_keys = doc_keys[pos_index]                       # [B]
    is_pos = torch.zeros(B, N, dtype=torch.bool, device=q.device)
    is_pos[rows, pos_index] = True
    same_text = doc_keys[None, :] == pos_keys[:, None]   # includes the positive itself
    drop_qd = same_text | (s_qd.detach() > limit)
    if known_pos is not None:
        drop_qd |= known_pos
    parts = [s_pos[:, None], _masked(s_qd, drop_qd)]
    masked = [drop_qd & ~is_pos]
    if cfg.query_query and B > 1:
        s_qq = q @ q.T
        drop_qq = torch.eye(B, dtype=torch.bool, device=q.device) | (s_qq.detach() > limit)
        if query_keys is not None:
            drop_qq |= query_keys[None, :] == query_keys[:, None]
        parts.append(_masked(s_qq, drop_qq))
        masked.append(drop_qq & ~torch.eye(B, dtype=torch.bool, device=q.device))
    if cfg.doc_doc and N > 1:
        s_dd = d[pos_index] @ d.T                        # [B, N]
        drop_dd = same_text | (s_dd.detach() > limit)
        if known_pos is not None:
            drop_dd |= known_pos
        parts.append(_masked(s_dd, drop_dd))
        masked.append(drop_dd & ~is_pos)
    logits = torch.cat(parts, dim=1) / cfg.temperature
    loss = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    if not return_stats:
        return loss
    n_masked = sum(int(m.sum()) for m in masked)
    return loss, {"masked_negatives": n_masked, "pos_score": float(s_pos.mean())}

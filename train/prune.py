"""Structured pruning: importance scores, dense slicing, and the progressive prune -> re-align schedule.

Depth (ShortGPT / Minitron): Block Influence of layer i over calibration tokens t,
    BI_i = mean_t (1 - cos(x_i[t], x_{i+1}[t]))           x_i = the layer's input, x_{i+1} its output
a layer that barely rotates its input does little and goes first. For comparison, `layer_skip_loss`
measures the alignment loss (MSE to the teacher) with each layer skipped.
Width (Minitron): importance of FFN unit j of layer i = mean over calibration tokens of |a_ij|, where
a = gelu(x W1^T + b1) (BERT/MPNet) or silu(x Wg^T) * (x Wu^T) (Qwen3). Kept widths are rounded to a
hardware-friendly multiple (64) so GEMM tiles stay full.
Pruning produces a *dense* smaller model (layers removed, weight matrices sliced, no masks), saved with
per-layer widths in our config.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hlm_engine.encoder import Encoder
from hlm_engine.models import build_model
from hlm_engine.models.packing import pack


def _calibration_batches(enc: Encoder, texts: list[str], batch_size: int):
    ids = enc.tokenize(texts)
    for s in range(0, len(ids), batch_size):
        yield pack(ids[s: s + batch_size], enc.device)


@torch.no_grad()
def calibration_stats(enc: Encoder, texts: list[str], batch_size: int = 64, progress: bool = False):
    """(block influence [L], FFN unit importance: list of [I_i]) over a calibration set of real texts."""
    L = enc.config.num_layers
    bi_sum = torch.zeros(L, dtype=torch.float64)
    act_sum = [torch.zeros(n, dtype=torch.float64) for n in enc.config.intermediate_sizes]
    n_tok = 0
    layer_in: dict[int, torch.Tensor] = {}
    model = enc.model
    arch = enc.config.arch

    def tap(kind, i, x):
        if kind == "layer_in":
            layer_in[i] = x
        elif kind == "layer_out":
            bi_sum[i] += (1 - F.cosine_similarity(layer_in[i].float(), x.float(), dim=-1)).sum().double()
        else:  # ffn_in: recompute the intermediate activation for per-unit magnitudes
            layer = model.layers[i]
            if arch in ("bert", "mpnet"):
                a = F.gelu(F.linear(x, layer.up.weight, layer.up.bias))
            else:
                g, u = F.linear(x, layer.gate_up.weight).chunk(2, dim=-1)
                a = F.silu(g) * u
            act_sum[i] += a.float().abs().sum(0).double()

    was_training = model.training
    model.eval()
    batches = _calibration_batches(enc, texts, batch_size)
    if progress:
        batches = tqdm(batches, total=math.ceil(len(texts) / batch_size), desc="calibrate", unit="batch")
    for b in batches:
        model(b, tap=tap)
        n_tok += b.num_tokens
    model.train(was_training)
    return (bi_sum / max(n_tok, 1)).numpy(), [(a / max(n_tok, 1)).numpy() for a in act_sum]


@torch.no_grad()
def layer_skip_loss(enc: Encoder, texts: list[str], targets: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Alignment MSE to teacher targets [n, d] with each layer skipped in turn ([L]); higher = more important."""
    tgt = torch.as_tensor(targets, dtype=torch.float32)
    out = np.zeros(enc.config.num_layers)
    ids = enc.tokenize(texts)
    for i in range(enc.config.num_layers):
        tot = 0.0
        for s in range(0, len(ids), batch_size):
            b = pack(ids[s: s + batch_size], enc.device)
            hidden = enc.model(b, skip_layers={i})
            emb = _pool_project(enc, hidden, b)
            tot += ((emb - tgt[s: s + batch_size]) ** 2).sum().item()
        out[i] = tot / len(ids)
    return out


def _pool_project(enc: Encoder, hidden, b):
    # Same head as Encoder.embed_batch, on hidden states we computed ourselves.
    from hlm_engine import ops
    pooled = ops.pool(hidden, b.cu_seqlens, enc.config.pooling, None, False, backend=enc.backend)
    proj = getattr(enc.model, "proj", None)
    if proj is not None:
        pooled = F.linear(pooled, proj.weight, proj.bias)
    return F.normalize(pooled.float(), dim=-1)


def round_width(n: int, multiple: int = 64) -> int:
    """Round a kept FFN width to the nearest positive multiple (hardware-friendly GEMM shapes)."""
    return max(multiple, int(round(n / multiple)) * multiple)


def select_layers(block_influence: np.ndarray, keep: int) -> list[int]:
    """Indices of the `keep` layers with the highest Block Influence, in model order."""
    if not 1 <= keep <= len(block_influence):
        raise ValueError(f"keep must be in [1, {len(block_influence)}], got {keep}")
    return sorted(np.argsort(-np.asarray(block_influence), kind="stable")[:keep].tolist())


def select_units(importance: np.ndarray, width: int) -> np.ndarray:
    """Indices (ascending) of the `width` most important FFN units."""
    if not 1 <= width <= len(importance):
        raise ValueError(f"width must be in [1, {len(importance)}], got {width}")
    return np.sort(np.argsort(-np.asarray(importance), kind="stable")[:width])


@torch.no_grad()
def prune(enc: Encoder, keep_layers: list[int], keep_units: dict[int, np.ndarray] | None = None) -> Encoder:
    """A new dense Encoder with only `keep_layers` (original indices) and, per kept layer, only the FFN
    units in `keep_units[i]` (all units when absent). The input encoder is left untouched."""
    cfg = enc.config
    keep_units = keep_units or {}
    if sorted(set(keep_layers)) != list(keep_layers) or not keep_layers:
        raise ValueError(f"keep_layers must be a non-empty ascending list of distinct indices, got {keep_layers}")
    if keep_layers[-1] >= cfg.num_layers:
        raise ValueError(f"layer {keep_layers[-1]} out of range for a {cfg.num_layers}-layer model")
    widths = [len(keep_units[i]) if i in keep_units else cfg.intermediate_sizes[i] for i in keep_layers]
    new_cfg = dataclasses.replace(cfg, num_layers=len(keep_layers), intermediate_sizes=widths)
    old = enc.model.state_dict()
    sd = {k: v for k, v in old.items() if not k.startswith("layers.")}
    for new_i, i in enumerate(keep_layers):
        units = torch.as_tensor(keep_units[i], dtype=torch.long) if i in keep_units else None
        inter = cfg.intermediate_sizes[i]
        for k, v in old.items():
            prefix = f"layers.{i}."
            if not k.startswith(prefix):
                continue
            name = k[len(prefix):]
            if units is not None:
                if name in ("up.weight", "up.bias"):
                    v = v[units]
                elif name == "gate_up.weight":
                    v = torch.cat([v[:inter][units], v[inter:][units]])
                elif name == "down.weight":
                    v = v[:, units]
            sd[f"layers.{new_i}.{name}"] = v.clone()
    with torch.device("meta"):
        model = build_model(new_cfg, enc.backend)
    model.load_state_dict(sd, assign=True)
    model = model.to(device=enc.device, dtype=enc.dtype)
    model.train(enc.model.training)
    return Encoder(new_cfg, model, copy.copy(enc.tokenizer), None, enc.device, enc.dtype)


def prune_to(enc: Encoder, texts: list[str], num_layers: int, ffn_width: int | None, multiple: int = 64,
             batch_size: int = 64) -> tuple[Encoder, dict]:
    """One pruning step to (num_layers, ffn_width) by calibration importance; returns the model and scores."""
    bi, acts = calibration_stats(enc, texts, batch_size)
    return prune_by_scores(enc, bi, acts, num_layers, ffn_width, multiple)


def prune_by_scores(enc: Encoder, block_influence: np.ndarray, ffn_importance: list[np.ndarray], num_layers: int,
                    ffn_width: int | None, multiple: int = 64) -> tuple[Encoder, dict]:
    """`prune_to` on precomputed scores (from `calibration_stats`): keep the `num_layers` layers of highest
    Block Influence and, in each, the round_width(ffn_width) units of highest importance (never widening).
    info["importance_kept"][j] = sum of kept unit importances / sum of all, for kept layer j."""
    layers = select_layers(block_influence, num_layers)
    units = {}
    if ffn_width is not None:
        for i in layers:
            w = min(round_width(ffn_width, multiple), enc.config.intermediate_sizes[i])
            if w < enc.config.intermediate_sizes[i]:
                units[i] = select_units(ffn_importance[i], w)
    kept = [float(ffn_importance[i][units[i]].sum() / max(ffn_importance[i].sum(), 1e-30)) if i in units else 1.0
            for i in layers]
    return prune(enc, layers, units), {"block_influence": np.asarray(block_influence).tolist(), "kept_layers": layers,
                                       "widths": [len(units[i]) if i in units else enc.config.intermediate_sizes[i]
                                                  for i in layers],
                                       "importance_kept": kept}


def ffn_stats(ffn_importance: list[np.ndarray], mass: float = 0.9) -> list[dict]:
    """Per layer: width, mean/min/max unit importance, and how many of the top units hold `mass` of the total
    (a width the layer could be cut to while keeping that share of its activation magnitude)."""
    out = []
    for a in ffn_importance:
        a = np.asarray(a, dtype=np.float64)
        cum = np.cumsum(np.sort(a)[::-1])
        need = int(np.searchsorted(cum, mass * cum[-1]) + 1) if cum[-1] > 0 else len(a)
        out.append({"width": int(len(a)), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
                    f"units_for_{int(mass * 100)}pct": min(need, len(a))})
    return out

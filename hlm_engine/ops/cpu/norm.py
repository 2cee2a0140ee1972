"""Fused residual add + LayerNorm for fp32 CPU inference (csrc/cpu_layernorm.h).

Why: a query batch's rows are short. ATen's `x + residual` then `layer_norm` cost ~38 us per call at 100 x
384 (two ops, two passes, dispatch), 13 calls per MiniLM forward: ~10% of a batch-1 forward. The kernel
does one pass per row, on the calling thread. Same math as `add_layernorm_ref` (moments in fp32 around
the mean; |Δ| ~ 1e-6). Part of the `cpu` backend (`hlm_engine.ops.cpu`; HLM_CPU_KERNELS=0 builds it without it).
"""
from __future__ import annotations

import torch

from hlm_engine.ops.cpu import ext as cpu_kernels


def usable(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if cpu_kernels.EXT is None or not cpu_kernels.inference(x, residual, weight, bias) or x.dim() != 2 \
            or x.stride(-1) != 1:
        return False
    if residual is not None and (residual.shape != x.shape or residual.stride(-1) != 1):
        return False
    H = x.shape[1]
    return all(t is None or (t.dim() == 1 and t.numel() == H and t.is_contiguous()) for t in (weight, bias))


def add_layernorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (layernorm(x + residual) * weight + bias, x + residual); the sum is x itself when residual is None."""
    T, H = x.shape
    out = torch.empty(T, H, dtype=torch.float32)
    r = x if residual is None else torch.empty(T, H, dtype=torch.float32)
    # Raw addresses: every tensor stays referenced here until the kernel returns.
    cpu_kernels.EXT.add_layernorm(x.data_ptr(), x.stride(0), 0 if residual is None else residual.data_ptr(),
                                  0 if residual is None else residual.stride(0), weight.data_ptr(),
                                  0 if bias is None else bias.data_ptr(), float(eps), T, H, out.data_ptr(), H,
                                  0 if residual is None else r.data_ptr(), H)
    return out, r

"""The `cpu` backend: fp32 CPU inference on our C++ kernels (csrc/, `hlm_engine._cpu_kernels`).

    linear / FFNs  - packed small-M GEMMs (`linear.py`: our AVX2 kernel, else oneDNN), MKL above their row limit
    attention      - packed varlen attention straight on the fused-QKV rows (`attention.py`)
    add_layernorm  - one fused pass per row (`norm.py`)
    the rest       - the PyTorch references (RMSNorm, RoPE, pooling: small next to the GEMMs on a CPU)

Configured once when the backend is built (`CpuBackend.from_env`: HLM_CPU_PREPACK picks the GEMM,
HLM_CPU_KERNELS=0 drops attention/LayerNorm kernels) and carried by the model. A call where autograd
records, or with a dtype/layout a kernel does not read, runs the reference: the kernels have no backward.
"""
from __future__ import annotations

import os

import torch.nn.functional as F

from hlm_engine.ops.cpu import attention as _attn
from hlm_engine.ops.cpu import ext
from hlm_engine.ops.cpu import linear as _lin
from hlm_engine.ops.cpu import norm as _norm
from hlm_engine.ops.reference import TorchBackend


class CpuBackend(TorchBackend):
    name = "cpu"

    def __init__(self, gemm: str = "auto", kernels: bool = True):
        """gemm: auto | hlm | onednn | mkl (plain F.linear); kernels: attention + LayerNorm on our kernels."""
        self.gemm = _lin.choose(gemm)
        if kernels and ext.EXT is None:
            raise RuntimeError("the CPU attention/LayerNorm kernels need the built extension: " + ext.WHY)
        self.kernels = bool(kernels)

    @classmethod
    def from_env(cls) -> "CpuBackend":
        k = os.environ.get("HLM_CPU_KERNELS", "auto").strip().lower()
        if k not in ("", "1", "auto", "0", "off", "none"):
            raise ValueError(f"HLM_CPU_KERNELS={k!r}: choose auto or 0")
        return cls(os.environ.get("HLM_CPU_PREPACK", "auto"), kernels=k in ("", "1", "auto") and ext.available())

    def __repr__(self) -> str:
        return f"CpuBackend(gemm={self.gemm or 'mkl'!r}, kernels={self.kernels})"

    def linear(self, x, w, b=None, activation="none"):
        return _lin.linear(x, w, b, activation, self.gemm)

    def varlen_attention(self, q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None):
        if self.kernels and _attn.usable(q, k, v, bias, max_seqlen):
            return _attn.varlen_attention(q, k, v, cu_seqlens, causal, scale, bias)
        return super().varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)

    def add_layernorm(self, x, residual, weight, bias, eps):
        if self.kernels and _norm.usable(x, residual, weight, bias):
            return _norm.add_layernorm(x, residual, weight, bias, eps)
        return super().add_layernorm(x, residual, weight, bias, eps)

    def swiglu_ffn(self, x, w_gate_up, w_down, residual=None):
        if not _lin.inference(x, w_gate_up):  # training: the reference, which has a backward
            return super().swiglu_ffn(x, w_gate_up, w_down, residual)
        gate, up = self.linear(x, w_gate_up).chunk(2, dim=-1)
        out = self.linear(F.silu(gate) * up, w_down)
        return out if residual is None else out + residual

    def gelu_ffn(self, x, w1, b1, w2, b2, residual=None):
        if not _lin.inference(x, w1):
            return super().gelu_ffn(x, w1, b1, w2, b2, residual)
        out = self.linear(self.linear(x, w1, b1, "gelu"), w2, b2)
        return out if residual is None else out + residual

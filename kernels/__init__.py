"""Kernels: one file per op. Each file holds `<op>_ref` (the PyTorch reference: test oracle, benchmark
baseline and CPU fallback), the `@triton.jit` kernel and its launcher `<op>()`.

Installed as `hlm_engine.kernels`. Models never import this package: they call `hlm_engine.ops`.
"""

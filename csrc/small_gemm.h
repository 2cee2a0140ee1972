// The fp32 small-M GEMM's raw-buffer API, as hlm_engine.ops.cpu.linear uses it: y[M, N] = x[M, K] @ W[N, K]^T
// + bias over a weight the caller packs once (the 16-column panel layout and the kernel: packed_gemm.h).
//
// Torch-free and pybind-free; the bindings take raw pointers (the Python wrapper checks dtype, device,
// contiguity and shapes and owns the memory).
#pragma once

#include <cstdint>

#include "packed_gemm.h"

namespace hlm {

// True when the CPU has AVX2 + FMA (the kernel's only code path); callers fall back otherwise.
bool small_gemm_supported();

// Floats needed to pack a [N, K] weight.
int64_t packed_size(int64_t n, int64_t k);

// Pack row-major W [N, K] (nn.Linear's layout) into `out` (packed_size(n, k) floats).
void pack_weight(const float* w, int64_t n, int64_t k, float* out);

// y[m, :] = act(x[m, :] @ W^T + bias) for m < M, act = exact GELU when act_gelu else identity. x rows
// are ldx floats apart, y rows ldy apart; bias may be null. Runs on the calling thread only (the native
// forward, native_encoder.h, splits its GEMMs' panels over its own thread pool instead).
void small_gemm(const float* x, int64_t m, int64_t k, int64_t ldx, const float* packed, int64_t n,
                const float* bias, float* y, int64_t ldy, bool act_gelu);

// x = 0.5 x (1 + erf(x / sqrt 2)) in place, vectorized (|error| ~ 2e-7; ATen's erf runs ~10x slower
// per element on AVX2 EPYC, a visible share of a batch's time in BERT's 4x-wide FFN).
void gelu_inplace(float* x, int64_t n);

}  // namespace hlm

// Small-M fp32 GEMM for CPU query encoding: y[M, N] = x[M, K] @ W[N, K]^T + bias, M <= ~64.
//
// Why by hand: online query encoding is batch 1, so every linear is an M~6 GEMM (one short query's
// tokens) that streams the whole weight matrix once. Vendor sgemm (MKL, oneDNN) is tuned for big M and
// reaches ~30% of one core's DRAM bandwidth at that shape; this kernel is a plain register-blocked
// outer product over weights packed once into 16-column panels, so the weight stream is one sequential,
// prefetch-friendly read and each 64-byte line feeds up to 6 rows x 16 columns of FMAs.
//
// Packed layout: panel p holds output columns [16p, 16p+16) as K consecutive 16-float rows
// (packed[(p*K + k)*16 + j] = W[16p + j, k]); the last panel is zero-padded.
//
// Torch-free and pybind-free; the bindings take raw pointers (the Python wrapper in
// hlm_engine/cpu_linear.py checks dtype, device, contiguity and shapes and owns the memory).
#pragma once

#include <cstdint>

namespace hlm {

constexpr int64_t kPanel = 16;

// True when the CPU has AVX2 + FMA (the kernel's only code path); callers fall back otherwise.
bool small_gemm_supported();

// Floats needed to pack a [N, K] weight.
int64_t packed_size(int64_t n, int64_t k);

// Pack row-major W [N, K] (nn.Linear's layout) into `out` (packed_size(n, k) floats).
void pack_weight(const float* w, int64_t n, int64_t k, float* out);

// y[m, :] = act(x[m, :] @ W^T + bias) for m < M, act = exact GELU when act_gelu else identity. x rows
// are ldx floats apart, y rows ldy apart; bias may be null. Runs on the calling thread only: at batch-1
// sizes a second thread did not pay (each GEMM is ~0.1 ms; a hand-off per GEMM plus torch's own OpenMP
// threads spinning on the same cores made a 2-thread forward 3x slower), and bigger batches go to MKL.
void small_gemm(const float* x, int64_t m, int64_t k, int64_t ldx, const float* packed, int64_t n,
                const float* bias, float* y, int64_t ldy, bool act_gelu);

// x = 0.5 x (1 + erf(x / sqrt 2)) in place, vectorized (|error| ~ 2e-7; ATen's erf runs ~10x slower
// per element on AVX2 EPYC, a visible share of a batch's time in BERT's 4x-wide FFN).
void gelu_inplace(float* x, int64_t n);

}  // namespace hlm

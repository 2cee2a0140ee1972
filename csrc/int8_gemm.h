// Integer-arithmetic GEMM for int8 weight panels (packed_gemm.h's int8 layout) from a few rows up:
//     y[M, N] = act(x[M, K] @ (scale[n] * q[N, K])^T + bias),   x and y fp32.
//
// Why: the fp32-FMA path widens int8 weights to fp32, so past one register tile of rows (where the weight
// stream stops being the bound) int8 runs no faster than fp32 weights. `vpmaddwd` multiplies int16 pairs
// and sums each pair: one instruction does two k steps of 8 columns. On Zen 3 it issues 2 per cycle; with
// the `vpaddd` that accumulates each product the kernel does ~1.55x the k steps per cycle of the fp32 one
// (measured in L1: 160 vs 103 GFLOP/s at ~3.2 GHz; the adds, not the broadcasts, cap it below 2x).
//
// Activations are quantised dynamically per row to int16 (not int8, which costs embedding accuracy: see
// hlm_engine/ops/cpu/native.py) over a K-dependent range qmax = min(32767, (2^31 - 1) / (127 K)), so the
// int32 accumulator can never overflow: |sum| <= K * 127 * qmax. Row scale s_r = max|x_r| / qmax. K = 384
// keeps 15 bits, K = 1536 ~13.4, K = 3072 ~12.4: the result is the dequantised int8 weights times nearly
// exact x (relative error ~1e-4 of the row's largest term, far below the int8 weights' own rounding).
// Each int8 panel is widened, 192 k pairs at a time (12 KB, stays in L1), into int16 pairs interleaved as
// (w[k][j], w[k+1][j]) (odd K: the last pair's second weight is 0) and swept by 6-row x 16-column register
// tiles (12 int32 accumulators); rows go in blocks of 96 (quantised, then swept over every panel).
// Epilogue: y = float(acc) * (s_r * scale[col]) + bias[col], then GELU (avx2_math.h's, as the fp32 path).
// Rows whose max |x| is below 1e-30 quantise to 0 (y = bias); a row holding NaN or Inf gives a NaN row.
// Torch-free and pybind-free.
#pragma once

#include <cstdint>

#include "packed_gemm.h"

namespace hlm {

// Rows from which PackedLinear runs int8 weights on this path. Measured on Zen 3 (EPYC, one thread, one
// linear 384 x 1536 or 1536 x 384, weights from L3 or DRAM): at 1-6 rows (one fp32 register tile) the
// existing path is 8-25% faster (the widening into int16 is pure overhead for a single tile); 7 rows: even;
// 8-12 rows: this path 5-17% faster; 16: ~25%; 64-512: ~1.5x.
constexpr int64_t kIntRows = 8;

// True where the integer path applies: AVX2 + FMA here, m >= kIntRows and qmax >= 1024 (K <= 16512;
// longer sums keep the fp32 path).
bool int8_gemm_applies(int64_t m, int64_t k);

// The int16 range of the activations for a sum over k terms (see above).
int32_t int16_qmax(int64_t k);

// Row stride (int16) of quantised activations for a sum over k: k rounded up to 16 (zero-padded).
int64_t quant_ld(int64_t k);

// x[0:m, 0:k] (rows ldx floats apart) -> q (rows quant_ld(k) apart) and one scale per row (see above).
void quantize_rows(const float* x, int64_t m, int64_t ldx, int64_t k, int16_t* q, float* row_scale);

// y[0:m, columns of panels [p0, p1)] as above. `packed` / `scales` / `bias`: PackedLinear's int8 panels,
// per-column scales and (zero-padded, or null) bias; n the real column count. Quantises x itself, a row
// block at a time into buffers of the calling thread (thread_local): concurrent calls on one x are safe.
void gemm_i8_i16(const float* x, int64_t m, int64_t k, int64_t ldx, const int8_t* packed, const float* scales,
                 int64_t n, const float* bias, float* y, int64_t ldy, Act act, int64_t p0, int64_t p1);

// The same on rows quantize_rows made: a caller splitting one GEMM's panels over threads quantises x once
// (an O(M K) pass that costs ~20-30% of a 3-panel range's multiply-adds when each range repeats it).
void gemm_i8_i16_quantized(const int16_t* q, const float* row_scale, int64_t m, int64_t k, const int8_t* packed,
                           const float* scales, int64_t n, const float* bias, float* y, int64_t ldy, Act act,
                           int64_t p0, int64_t p1);

}  // namespace hlm

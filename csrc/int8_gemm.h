// Integer-arithmetic GEMM for int8 weight panels (packed_gemm.h's int8 layout), every row count:
//     y[M, N] = act(x[M, K] @ (scale[n] * q[N, K])^T + bias),   x and y fp32.
//
// Why: widening int8 weights to fp32 for fp32 FMAs costs more than the FMAs (two conversions per 8 weights per
// row tile), so int8 ran no faster than fp32 weights once the weight stream stopped being the bound.
// `vpmaddwd` multiplies int16 pairs and sums each pair: one instruction does two k steps of 8 columns. On
// Zen 3 it issues 2 per cycle; with the `vpaddd` that accumulates each product the kernel does ~1.55x the k
// steps per cycle of the fp32 one (measured in L1: 160 vs 103 GFLOP/s at ~3.2 GHz; the adds, not the
// broadcasts, cap it below 2x: the 4 vector pipes are all busy). At a query's ~7 rows the int8 pairs are
// sign-extended in registers straight from the packed panel (one instruction per 8 columns per pair).
//
// Activations are quantised dynamically per row to int16 (not int8, which costs embedding accuracy: see
// hlm_engine/ops/cpu/native.py) over a K-dependent range qmax = min(32767, (2^31 - 1) / (127 K)), so the
// int32 accumulator can never overflow: |sum| <= K * 127 * qmax. Row scale s_r = max|x_r| / qmax. K = 384
// keeps 15 bits, K = 1536 ~13.4, K = 3072 ~12.4, the longest taken (kMaxIntK = 66052) 8: the result is the
// dequantised int8 weights times nearly exact x (relative error ~1e-4 of the row's largest term at K <= 3072,
// far below the int8 weights' own rounding).
// Every row is quantised on its own and integer sums are exact, so a text's int8 embedding does not depend on
// the batch it came in (bitwise): the same arithmetic at batch 1 and batch 64.
// Rows go in blocks of 96 (quantised, then swept over every panel); more than two register tiles of rows
// (6-row x 16-column tiles, 12 int32 accumulators) widen each panel 192 k pairs at a time (12 KB, stays in L1)
// into int16 once for all of them; fewer widen in registers.
// Epilogue: y = float(acc) * (s_r * scale[col]) + bias[col], then GELU (avx2_math.h's, as the fp32 path).
// Rows whose max |x| is below 1e-30 quantise to 0 (y = bias); a row holding NaN or Inf gives a NaN row.
// Torch-free and pybind-free.
#pragma once

#include <cstdint>

#include "packed_gemm.h"

namespace hlm {

// The longest sum the integer path takes: qmax >= 256 (8-bit activations at worst). PackedLinear refuses
// int8 weights with a longer K (named in its error).
constexpr int64_t kMaxIntK = 2147483647LL / (127 * 256);

// True where the integer path runs: AVX2 + FMA here and 1 <= k <= kMaxIntK.
bool int8_gemm_applies(int64_t k);

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

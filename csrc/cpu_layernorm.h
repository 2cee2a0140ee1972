// Fused residual add + LayerNorm (post-norm encoders: BERT/MiniLM, MPNet) and + RMSNorm (pre-norm Qwen3)
// for fp32 CPU inference.
//
// Why by hand: a query batch's rows are short (~100 x 384 floats); ATen's add + layer_norm spend ~38 us per
// call there (two ops, two passes over memory and dispatch), 13 calls per MiniLM forward, ~10% of a batch-1
// forward. Here each row is summed, normalised and written in one pass over L1-resident data.
#pragma once

#include <cstdint>

namespace hlm {

// For each of `rows` rows of h floats: r = x + residual (residual may be null: r = x);
// out = (r - mean) / sqrt(var + eps) * weight + bias (bias may be null). `r_out` (may be null) receives r.
// Row strides (in floats): ldx, ldres, ldout, ldr. out may alias x (in place). Runs on the calling thread.
void add_layernorm(const float* x, int64_t ldx, const float* residual, int64_t ldres, const float* weight,
                   const float* bias, float eps, int64_t rows, int64_t h, float* out, int64_t ldout, float* r_out,
                   int64_t ldr);

// The same with RMSNorm (Qwen3): r = x + residual; out = r / sqrt(mean(r^2) + eps) * weight. Rows of h
// floats; `residual` and `r_out` may be null; out may alias x, and r_out may alias residual (in place).
void add_rmsnorm(const float* x, int64_t ldx, const float* residual, int64_t ldres, const float* weight, float eps,
                 int64_t rows, int64_t h, float* out, int64_t ldout, float* r_out, int64_t ldr);

}  // namespace hlm

// Packed (varlen) multi-head attention for fp32 CPU inference, on the unpadded layout itself.
//
// Why by hand: a served batch is dozens of short queries (~10 tokens). The PyTorch reference pads q, k
// and v to [B, H, L, D], builds a mask and runs batched matmuls + softmax: the attention math is ~1% of
// the forward's FLOPs, but that padding and op overhead took ~25% of a batch-36 forward on one core.
// Here every (sequence, head) is computed in place from the packed rows (strided views of the fused QKV
// output): K is transposed once per (sequence, kv head) into a small L1-resident tile (8 x 8 register
// transposes) so the scores of 8 keys come from one FMA per head-dim element, for up to 8 query rows at once
// (a short query's rows in one block: 8 independent FMA chains, not one latency-bound chain per row), then a
// max-subtracted softmax (vector exp, vector masks) and P @ V two rows at a time. On 64 queries of 4-11
// tokens (MiniLM's 12 x 32 heads, one core) that took a call from 0.74-0.90 ms to 0.28-0.42 ms.
// Exact softmax (not online): a whole row of scores fits in a few KB even for 8k-token documents.
//
// Torch-free; the bindings take raw pointers (hlm_engine/ops/cpu/attention.py validates the tensors).
#pragma once

#include <cstdint>

namespace hlm {

struct AttnArgs {
  const float* q;  // q[t, h, :] at q + t * q_st + h * q_sh (head dim contiguous)
  const float* k;  // k[t, g, :], g = h / (hq / hkv)
  const float* v;
  float* out;      // out[t, h, :] at out + t * o_st + h * o_sh
  int64_t q_st, q_sh, k_st, k_sh, v_st, v_sh, o_st, o_sh;
  const int32_t* cu_seqlens;  // [batch + 1], cu[0] = 0, non-decreasing, cu[batch] = tokens
  int64_t batch, tokens, hq, hkv, head_dim;
  float scale;
  bool causal;
  const float* bias;  // optional additive bias[h, i, j] at bias + h * b_sh + i * b_si + j (i, j < bias_len)
  int64_t b_sh, b_si, bias_len;
};

// out = softmax(scale q k^T + bias + mask) v per sequence and head. Runs on the calling thread.
// Throws std::invalid_argument (naming the problem) on inconsistent shapes or cu_seqlens.
void varlen_attention(const AttnArgs& a);

// The same on a slice of the work, for callers that validated `a` once and split it over threads: the
// (sequence b, kv head g) units u = b * hkv + g in [u0, u1), each with its group of query heads. `scratch`
// holds attention_scratch_floats(head_dim, longest sequence) floats (per thread). No checks, no allocation.
int64_t attention_scratch_floats(int64_t head_dim, int64_t max_len);
void varlen_attention_units(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch);

}  // namespace hlm

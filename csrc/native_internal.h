// NativeEncoder's private types, shared by its load (native_encoder.cpp) and forward (native_forward.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "native_encoder.h"

namespace hlm {

// Lookup of the caller's tensors with errors that name the tensor and both shapes.
struct Weights {
  const std::map<std::string, TensorView>& map;
  const float* get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<float> copy(const std::string& name, const std::vector<int64_t>& shape) const;
  PackedLinear linear(const std::string& name, int64_t n, int64_t k, bool bias, WeightFormat fmt) const;
};

struct NativeEncoder::Layer {
  int64_t inter = 0;
  PackedLinear qkv, o;
  PackedLinear up, down;  // post-norm: up (+GELU), down; Qwen3: gate_up [2I, H] (gate rows first), down
  std::vector<float> attn_norm_w, attn_norm_b, ffn_norm_w, ffn_norm_b;  // the biases: post-norm only
  std::vector<float> q_norm, k_norm;                                  // Qwen3 per-head RMSNorm weights
};

// One forward's buffers, reused by later calls (grown, never shrunk): token-major [rows, width] arrays.
struct NativeEncoder::Scratch {
  std::vector<float> x;       // post-norm: the hidden states; Qwen3: the residual stream
  std::vector<float> qkv;     // [T, (Hq + 2 Hkv) D]
  std::vector<float> attn;    // [T, Hq D]
  std::vector<float> tmp;     // [T, H]: attention output / FFN output projections
  std::vector<float> hn;      // Qwen3: the normed input of the next GEMM
  std::vector<float> ffn;     // [T, I] (post-norm) or [T, 2I] (Qwen3)
  std::vector<float> bias;    // MPNet: [Hq, L, L] relative-position bias of this batch's longest text
  std::vector<float> rope;    // Qwen3: [T, D] (cos of the D/2 angles, then their sin)
  std::vector<float> pooled;  // [B, H]
  std::vector<float> proj;    // [B, output_dim]
  std::vector<int32_t> cu;    // cu_seqlens as the attention kernel reads them
  std::vector<int64_t> pos;   // positions (given or derived)
  std::vector<float> strips;   // many rows: a GEMM's input packed into row strips (packed_gemm.h pack_rows)
  std::vector<int16_t> xq;     // int8 weights at many rows: a GEMM's input quantised to int16 (int8_gemm.h)
  std::vector<float> x_scale;  // ... and its row scales
  std::vector<std::vector<float>> per_thread;     // attention + dequantisation scratch of each thread
};

}  // namespace hlm

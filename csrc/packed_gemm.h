// Small-M GEMM over weights packed once into 16-column panels, in three storage formats:
//     y[M, N] = act(x[M, K] @ W[N, K]^T + bias),   M ~ 1..512, x and y fp32, fp32 accumulation.
//
// Why by hand: online query encoding is batch 1, so every linear is an M~6 GEMM that streams the whole
// weight matrix once: the time is the weight bytes over the memory bandwidth. Vendor sgemm (MKL, oneDNN)
// is tuned for big M and reaches ~30% of one core's DRAM stream at that shape; here the weight stream is
// one sequential, prefetch-friendly read and each 64-byte line feeds up to 6 rows x 16 columns of FMAs.
// Storing the weights in bf16 or int8 halves or quarters the bytes per query. bf16 weights are widened to fp32
// in registers (fp32 FMAs on fp32 activations, as fp32 weights); int8 weights run on integer multiply-adds over
// activations quantised per row to int16 at every row count (int8_gemm.h: ~1.5x the fp32 rate on Zen 3).
//
// Packed layout: panel p holds output columns [16p, 16p+16) as K consecutive rows of 16 weights;
//   fp32: packed[(p*K + k)*16 + j] = W[16p + j, k]   (the last panel zero-padded)
//   bf16: the same, rounded to nearest even, each row of 16 stored as c0 c8 c1 c9 ... c7 c15 so that one
//         shift (columns 0-7) and one mask (8-15) of the 32-bit words widen them (no shuffle)
//   int8: W[n, k] ~ scale[n] * q[n, k], q in [-127, 127], one symmetric scale per output channel
//         (max |W[n, :]| / 127; it multiplies the sum once, in the epilogue), stored as k pairs: panel p holds
//         ceil(K/2) pairs of 32 bytes, (q[16p + j, 2t], q[16p + j, 2t + 1]) for j = 0-7, then j = 8-15, so
//         one sign extension gives vpmaddwd's operand for 8 columns (odd K: the last pair's second is 0).
// Torch-free and pybind-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace hlm {

constexpr int64_t kPanel = 16;

enum class WeightFormat : int { kF32 = 0, kBF16 = 1, kI8 = 2 };

// "fp32" | "bf16" | "int8" -> format; anything else throws std::invalid_argument naming the choices.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat f);

enum class Act : int { kNone = 0, kGelu = 1 };

// A linear layer's weight packed once (and its bias, kept fp32 and zero-padded to whole panels).
class PackedLinear {
 public:
  PackedLinear() = default;
  // w: row-major [n, k] (nn.Linear's layout); bias: n floats or null.
  PackedLinear(const float* w, int64_t n, int64_t k, const float* bias, WeightFormat fmt);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t panels() const { return (n_ + kPanel - 1) / kPanel; }
  WeightFormat format() const { return fmt_; }
  // Bytes one pass over the weight reads: panels + scales (+ bias), what a batch-1 GEMM streams.
  size_t bytes() const;

  // y[0:m, columns of panels [p0, p1)] = act(x @ W^T + b); x rows ldx floats apart, y rows ldy apart.
  // `scratch` (dequant_scratch_floats(k) floats, may be null for fp32 / int8) lets bf16 weights that serve
  // several row tiles be widened once into fp32 instead of once per tile. Runs on the calling thread.
  void run(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, Act act, int64_t p0, int64_t p1,
           float* scratch) const;

  // From kPackRows rows (fp32 / bf16 weights) run() first
  // packs x into row strips (pack_rows) in a buffer of the calling thread. A caller splitting one GEMM's
  // panels over threads can pack x once (pack_rows over row ranges, in parallel) and run each range on it:
  bool packs_rows(int64_t m) const;
  void run_packed(const float* strips, int64_t m, float* y, int64_t ldy, Act act, int64_t p0, int64_t p1,
                  float* scratch) const;

  // int8 weights (int8_gemm.h) run on integer multiply-adds over x quantised per row to int16; run()
  // quantises x itself, once per call. A caller splitting one GEMM's panels over threads can quantise x once
  // (quantize_rows, int8_gemm.h) and run each range on the shared rows. integer_path(m) is true for every m
  // where int8 weights run here (AVX2 + FMA); `m` is kept for callers that ask per GEMM.
  bool integer_path(int64_t m) const;
  void run_quantized(const int16_t* q, const float* row_scale, int64_t m, float* y, int64_t ldy, Act act,
                     int64_t p0, int64_t p1) const;

 private:
  struct Free {
    void operator()(void* p) const;
  };
  int64_t n_ = 0, k_ = 0;
  WeightFormat fmt_ = WeightFormat::kF32;
  std::unique_ptr<uint8_t, Free> data_;   // panels, 64-byte aligned, on huge pages where granted (weight_heap.h)
  std::unique_ptr<float, Free> scales_;   // int8: panels * 16 per-channel scales (padding 0)
  std::unique_ptr<float, Free> bias_;     // panels * 16, or null
};

int64_t dequant_scratch_floats(int64_t k);

// Rows [r0, r1) of x[m, k] (rows ldx floats apart) into the strips layout run_packed reads (m * k floats):
// 6-row strips, each k-major, so a register tile's activations are one sequential stream. Disjoint row
// ranges may be packed concurrently.
void pack_rows(const float* x, int64_t m, int64_t k, int64_t ldx, float* strips, int64_t r0, int64_t r1);

// The fp32 kernel on a caller-owned packed buffer (hlm_engine.ops.cpu.linear's API, small_gemm.h):
// y[0:m, 0:n] = act(x @ W^T + bias); bias (n floats) may be null.
void gemm_f32_panels(const float* x, int64_t m, int64_t k, int64_t ldx, const float* packed, int64_t n,
                     const float* bias, float* y, int64_t ldy, Act act);

// Round-to-nearest-even fp32 -> bf16 bits (NaN kept quiet).
uint16_t to_bf16(float x);

}  // namespace hlm

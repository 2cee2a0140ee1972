// NativeEncoder: one C++ call per encoder forward for CPU inference, over weights packed once at load.
//
// Why: at batch 1 the packed GEMMs take ~4 ms of a ~7.7 ms MiniLM query; the rest was per-op overhead of
// ~45 Python-dispatched ops per forward (each re-checking its inputs), tokenization and pooling. Here the
// whole forward -- embeddings, QKV GEMM, attention on the packed rows, output projection, add + LayerNorm /
// RMSNorm, the FFN with its fused activation, Qwen3's q/k RMSNorm + RoPE, pooling, the folded projection
// head and the L2 normalisation -- runs in C++ on the unpadded (cu_seqlens) batch, validated once at load.
// With threads > 1 every GEMM's output panels (and attention's heads, norms' rows) are split over a pool
// owned by this encoder, so one query streams its weights through several cores' memory bandwidth; a batch
// of many token rows (>= 96 per thread) is split by texts instead, each thread running whole forwards.
//
// Same math as the PyTorch reference (hlm_engine/models/bert.py, qwen3.py; kernels/*_ref), which stays the
// oracle: fp32 weights give the reference's embeddings (cos >= 0.99999); bf16 / int8 weights (packed_gemm.h)
// trade a bounded error for 2x / 4x fewer bytes per query.
//
// Thread safety: forward() may be called from several threads at once. Each call takes its own scratch
// (a free list grows to the number of concurrent callers); the pool serves one call at a time and a
// concurrent caller runs on its own thread instead of waiting for it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "packed_gemm.h"
#include "thread_pool.h"

namespace hlm {

// The model's shape: hlm_engine.config.EncoderConfig's fields that a forward reads.
struct EncoderSpec {
  std::string arch;  // bert | mpnet (post-norm, GELU) | qwen3 | qwen2 (pre-RMSNorm, SwiGLU, causal, RoPE)
  int64_t vocab_size = 0, hidden_size = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  std::vector<int64_t> intermediate_sizes;  // per layer (pruned models differ)
  int64_t max_position_embeddings = 0;
  float norm_eps = 1e-12f;
  int64_t type_vocab_size = 0, position_offset = 0;
  int64_t relative_attention_num_buckets = 0, relative_attention_max_distance = 128;  // MPNet
  double rope_theta = 1e6;
  bool qk_norm = false, attention_bias = true;
  std::string pooling = "mean";  // mean | cls | last
  int64_t output_dim = 0;        // folded projection head after pooling (0: none)
};

// A borrowed fp32 tensor (row-major, contiguous) from the caller's state dict.
struct TensorView {
  const float* data = nullptr;
  std::vector<int64_t> shape;
};

// MPNet/T5 bidirectional bucket of a relative distance rel = key pos - query pos: exact up to
// num_buckets / 4, logarithmic up to max_distance, the sign in the upper half.
int32_t relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance);

class NativeEncoder {
 public:
  // `weights`: the model's state dict by our parameter names (embed.word.weight, layers.0.qkv.weight, ...).
  // Linear weights are packed (copied) in `format`; the embedding tables are borrowed: `keep_alive` owns
  // their memory for this object's lifetime. Throws std::invalid_argument naming a missing tensor or a
  // shape that disagrees with the spec.
  NativeEncoder(const EncoderSpec& spec, const std::map<std::string, TensorView>& weights, WeightFormat format,
                int threads, std::shared_ptr<void> keep_alive);
  ~NativeEncoder();

  // ids [tokens] (each < vocab_size), positions [tokens] (each token's position within its text; null:
  // derived from cu_seqlens), cu_seqlens [batch + 1] -> out [batch, dim], pooled, projected, truncated
  // to the first `dim` features (Matryoshka; dim <= embed_dim()) and L2-normalised when `normalize`.
  // Throws std::invalid_argument naming bad ids, positions or cu_seqlens.
  void forward(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu_seqlens, int64_t batch,
               float* out, int64_t dim, bool normalize) const;

  int64_t embed_dim() const { return spec_.output_dim > 0 ? spec_.output_dim : spec_.hidden_size; }
  int threads() const;
  void set_threads(int threads);  // >= 1; takes effect for the next forward
  WeightFormat format() const { return format_; }
  const EncoderSpec& spec() const { return spec_; }
  // Bytes of packed linear weights one forward streams (what batch-1 latency is bound by).
  size_t weight_bytes() const;

  struct Layer;     // packed weights of one layer (native_encoder.cpp)
  struct Scratch;   // one forward's buffers (native_forward.cpp)

 private:
  struct Ctx;  // one call's view: scratch, pool, thread count

  // One forward on `threads` threads of `pool` (null: the calling thread only), inputs already checked.
  void run(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu_seqlens, int64_t batch,
           float* out, int64_t dim, bool normalize, ThreadPool* pool, int threads) const;
  void check_inputs(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu,
                    int64_t batch, int64_t dim) const;
  void embed(Ctx& c) const;
  void postnorm_layer(Ctx& c, const Layer& l) const;
  void qwen3_layer(Ctx& c, const Layer& l, bool first) const;
  void pool_project(Ctx& c, float* out, int64_t dim, bool normalize) const;
  void gemm(Ctx& c, const PackedLinear& w, const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
            Act act) const;
  void attention(Ctx& c, float* qkv, float* out) const;

  std::unique_ptr<Scratch> take_scratch() const;
  void give_scratch(std::unique_ptr<Scratch> s) const;

  EncoderSpec spec_;
  WeightFormat format_;
  bool postnorm_;   // bert / mpnet; else qwen3 / qwen2
  int pool_mode_;   // 0 mean, 1 cls, 2 last
  std::shared_ptr<void> keep_alive_;
  const float* word_ = nullptr;        // [vocab, H], borrowed
  const float* position_ = nullptr;    // [max_pos, H], borrowed (post-norm)
  std::vector<float> token_type0_;     // [H]: token type 0 (BERT), else empty
  std::vector<float> emb_norm_w_, emb_norm_b_;  // post-norm embedding LayerNorm
  std::vector<float> final_norm_w_;    // Qwen3 final RMSNorm
  std::vector<float> rel_bias_;        // MPNet: [buckets, heads]
  std::vector<int32_t> rel_bucket_;    // MPNet: bucket of relative distance d at index d + max_rel
  int64_t max_rel_ = 0;
  std::vector<float> inv_freq_;        // RoPE: [head_dim / 2]
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<PackedLinear> proj_;

  mutable std::mutex mutex_;  // guards pool_ and free_
  std::shared_ptr<ThreadPool> pool_;
  mutable std::vector<std::unique_ptr<Scratch>> free_;
};

}  // namespace hlm

// NativeEncoder::forward: the whole encoder on one unpadded batch (see native_encoder.h for the why).
//
// Post-norm (BERT/MiniLM, MPNet), as hlm_engine/models/bert.py:
//   x = LN(word[id] + pos[p + offset] (+ type[0]));  per layer: qkv = x Wqkv^T + b;  a = attn(q, k, v [+ rel bias])
//   x = LN(a Wo^T + bo + x);  x = LN(gelu(x W1^T + b1) W2^T + b2 + x)
// Pre-norm (Qwen3/Qwen2), as hlm_engine/models/qwen3.py, with the residual r carried between the fused norms:
//   h = RMS(r);  qkv = h Wqkv^T (+b);  q, k = rope(RMS_head(q), RMS_head(k));  a = causal GQA attn
//   h = RMS(r = a Wo^T + r);  r = (silu(h Wg^T) * h Wu^T) Wd^T + r;  final h = RMS(r)
// then pooling (mean / cls / last), the projection head, Matryoshka truncation and L2 normalisation.
#include <algorithm>
#include <cmath>
#include <exception>
#include <stdexcept>
#include <string>

#include "avx2_math.h"
#include "cpu_attention.h"
#include "cpu_layernorm.h"
#include "int8_gemm.h"
#include "native_internal.h"

namespace hlm {

namespace {

// Below this many token rows a norm / RoPE / SiLU pass is a few microseconds: one thread does it rather
// than paying a hand-off. GEMMs (the time) and attention are always split.
constexpr int64_t kParallelRows = 16;
constexpr int64_t kChunksPerThread = 4;  // GEMM panel runs per thread
// Token rows per thread from which a multi-threaded forward splits the batch's texts over the threads
// instead of each op's columns (NativeEncoder::forward).
constexpr int64_t kSplitRows = 96;

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("NativeEncoder.forward: " + what); }

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// silu(x[:, :I]) * x[:, I:] into x[:, :I] (rows of 2I floats).
#ifdef HLM_X86
HLM_AVX2 void swiglu_rows(float* x, int64_t rows, int64_t inter) {
  for (int64_t r = 0; r < rows; ++r) {
    float* g = x + r * 2 * inter;
    const float* u = g + inter;
    int64_t j = 0;
    for (; j + 8 <= inter; j += 8) {
      _mm256_storeu_ps(g + j, _mm256_mul_ps(silu(_mm256_loadu_ps(g + j)), _mm256_loadu_ps(u + j)));
    }
    for (; j < inter; ++j) g[j] = g[j] / (1.f + std::exp(-g[j])) * u[j];
  }
}
#else
void swiglu_rows(float*, int64_t, int64_t) {}
#endif

// In place on one head row of d floats: optional RMSNorm (weight w), then RoPE in the half-split layout,
// x'[i] = x[i] cos - x[i + d/2] sin, x'[i + d/2] = x[i + d/2] cos + x[i] sin (kernels/qk_norm_rope.py).
void norm_rope_row(float* x, int64_t d, const float* w, float eps, const float* cs) {
  if (w != nullptr) {
    float ss = 0.f;
    for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
    const float rstd = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
    for (int64_t i = 0; i < d; ++i) x[i] = x[i] * rstd * w[i];
  }
  const int64_t h = d / 2;
  const float* cos = cs;
  const float* sin = cs + h;
  for (int64_t i = 0; i < h; ++i) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cos[i] - b * sin[i];
    x[i + h] = b * cos[i] + a * sin[i];
  }
}

}  // namespace

struct NativeEncoder::Ctx {
  Scratch& s;
  ThreadPool* pool;  // null: this call runs on its own thread
  int n;             // threads of this call
  int64_t T, B, max_len;
  const int64_t* ids;

  // fn(r0, r1) over row ranges, split over the threads when there are enough rows.
  template <typename F>
  void rows(int64_t count, F&& fn) {
    if (pool == nullptr || count < kParallelRows) return fn(int64_t{0}, count);
    const int chunks = 2 * n;
    pool->run(chunks, [&](int i, int) { fn(count * i / chunks, count * (i + 1) / chunks); });
  }
};

void NativeEncoder::check_inputs(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu,
                                 int64_t batch, int64_t dim) const {
  if (batch < 1) bad("need at least one text (cu_seqlens has " + std::to_string(batch + 1) + " entries)");
  if (cu[0] != 0) bad("cu_seqlens[0] must be 0, got " + std::to_string(cu[0]));
  for (int64_t b = 0; b < batch; ++b) {
    if (cu[b + 1] <= cu[b]) {
      bad("every text needs at least one token: cu_seqlens must increase (text " + std::to_string(b) + " has " +
          std::to_string(cu[b + 1] - cu[b]) + ")");
    }
  }
  if (cu[batch] != tokens) {
    bad("cu_seqlens[-1] = " + std::to_string(cu[batch]) + " but there are " + std::to_string(tokens) + " tokens");
  }
  for (int64_t t = 0; t < tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= spec_.vocab_size) {
      bad("token id " + std::to_string(ids[t]) + " at " + std::to_string(t) + " is outside the vocabulary [0, " +
          std::to_string(spec_.vocab_size) + ")");
    }
  }
  if (postnorm_) {
    const int64_t limit = spec_.max_position_embeddings - spec_.position_offset;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t len = cu[b + 1] - cu[b];
      if (positions == nullptr && len > limit) {
        bad("text " + std::to_string(b) + " has " + std::to_string(len) + " tokens; the model has " +
            std::to_string(limit) + " positions");
      }
      if (!rel_bias_.empty() && len > max_rel_) {
        bad("text " + std::to_string(b) + " is longer than the relative-position bias covers");
      }
    }
  }
  if (positions != nullptr) {
    for (int64_t t = 0; t < tokens; ++t) {
      if (positions[t] < 0 || (postnorm_ && positions[t] >= spec_.max_position_embeddings - spec_.position_offset)) {
        bad("position " + std::to_string(positions[t]) + " at " + std::to_string(t) + " is outside the model's range");
      }
    }
  }
  if (dim < 1 || dim > embed_dim()) {
    bad("dim must be in [1, " + std::to_string(embed_dim()) + "], got " + std::to_string(dim));
  }
}

void NativeEncoder::forward(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu_seqlens,
                            int64_t batch, float* out, int64_t dim, bool normalize) const {
  check_inputs(ids, positions, tokens, cu_seqlens, batch, dim);
  if (!cpu_has_avx2_fma()) throw std::runtime_error("NativeEncoder.forward: this CPU lacks AVX2 + FMA");
  std::shared_ptr<ThreadPool> pool;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pool = pool_;
  }
  // A pool busy with another caller's forward: run this one on the calling thread (no waiting).
  const bool owned = pool != nullptr && pool->try_acquire();
  struct Release {
    ThreadPool* p;
    ~Release() {
      if (p != nullptr) p->release();
    }
  } release{owned ? pool.get() : nullptr};
  const int n = owned ? pool->size() : 1;
  if (n == 1 || batch < n || tokens < n * kSplitRows) {
    return run(ids, positions, tokens, cu_seqlens, batch, out, dim, normalize, owned ? pool.get() : nullptr, n);
  }
  // Many rows: each thread runs whole forwards on its own contiguous group of texts (about tokens / n rows
  // each), instead of every op splitting its columns. No hand-off per op (~60 per MPNet forward), each
  // thread's activations stay in its own core's caches: measured on 2 Zen 3 cores, MPNet on 64 titles
  // (~1,200 rows), 110-112 GFLOP/s, ~5-8% over the column split and level with torch's MKL per-op path (which
  // the column split trailed). Few rows (a short query) keep the column split, which streams the weights
  // through both cores once.
  std::vector<int64_t> cut(n + 1, batch);
  cut[0] = 0;
  for (int g = 1, b = 0; g < n; ++g) {  // the first text whose start passes g / n of the tokens
    while (b < batch && cu_seqlens[b] * n < tokens * g) ++b;
    cut[g] = std::max(cut[g - 1] + 1, std::min<int64_t>(b, batch - (n - g)));
  }
  std::vector<std::exception_ptr> errors(n);
  pool->run(n, [&](int g, int) {
    try {
      const int64_t b0 = cut[g], b1 = cut[g + 1], t0 = cu_seqlens[b0];
      std::vector<int64_t> cu(cu_seqlens + b0, cu_seqlens + b1 + 1);
      for (int64_t& v : cu) v -= t0;
      run(ids + t0, positions ? positions + t0 : nullptr, cu_seqlens[b1] - t0, cu.data(), b1 - b0, out + b0 * dim,
          dim, normalize, nullptr, 1);
    } catch (...) {
      errors[g] = std::current_exception();
    }
  });
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void NativeEncoder::run(const int64_t* ids, const int64_t* positions, int64_t tokens, const int64_t* cu_seqlens,
                        int64_t batch, float* out, int64_t dim, bool normalize, ThreadPool* pool, int threads) const {
  std::unique_ptr<Scratch> scratch = take_scratch();
  struct GiveBack {
    const NativeEncoder* e;
    std::unique_ptr<Scratch>& s;
    ~GiveBack() { e->give_scratch(std::move(s)); }
  } give_back{this, scratch};
  Scratch& s = *scratch;

  const EncoderSpec& sp = spec_;
  const int64_t T = tokens, B = batch, H = sp.hidden_size, hd = sp.head_dim;
  const int64_t nq = sp.num_heads, nkv = sp.num_kv_heads, qkv_w = (nq + 2 * nkv) * hd;
  int64_t max_len = 0, max_inter = 0;
  for (int64_t b = 0; b < B; ++b) max_len = std::max(max_len, cu_seqlens[b + 1] - cu_seqlens[b]);
  for (int64_t I : sp.intermediate_sizes) max_inter = std::max(max_inter, I);
  Ctx c{s, pool, threads, T, B, max_len, ids};

  grow(s.x, T * H), grow(s.qkv, T * qkv_w), grow(s.attn, T * nq * hd), grow(s.tmp, T * H);
  grow(s.ffn, T * max_inter * (postnorm_ ? 1 : 2));
  grow(s.pooled, B * H), grow(s.proj, B * std::max<int64_t>(sp.output_dim, 1));
  s.cu.assign(cu_seqlens, cu_seqlens + B + 1);
  s.pos.resize(T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = cu_seqlens[b]; t < cu_seqlens[b + 1]; ++t) s.pos[t] = positions ? positions[t] : t - cu_seqlens[b];
  }
  const int64_t widest_k = std::max({H, nq * hd, max_inter});
  const size_t per_thread = static_cast<size_t>(
      std::max(attention_scratch_floats(hd, max_len), dequant_scratch_floats(widest_k)));
  if (s.per_thread.size() < static_cast<size_t>(c.n)) s.per_thread.resize(c.n);
  for (int i = 0; i < c.n; ++i) grow(s.per_thread[i], per_thread);

  if (!rel_bias_.empty()) {  // MPNet: bias[h, i, j] = table[bucket(j - i), h], shared by every layer
    const int64_t L = max_len;
    grow(s.bias, nq * L * L);
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < L; ++j) {
        const float* row = rel_bias_.data() + rel_bucket_[j - i + max_rel_] * nq;
        for (int64_t h = 0; h < nq; ++h) s.bias[(h * L + i) * L + j] = row[h];
      }
    }
  }
  if (!postnorm_) {  // RoPE angles in float32 as rope_cos_sin: pos * inv_freq, then cos / sin
    grow(s.rope, T * hd), grow(s.hn, T * H);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const float a = static_cast<float>(s.pos[t]) * inv_freq_[i];
        s.rope[t * hd + i] = std::cos(a);
        s.rope[t * hd + hd / 2 + i] = std::sin(a);
      }
    }
  }

  embed(c);
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (postnorm_) postnorm_layer(c, *layers_[i]);
    else qwen3_layer(c, *layers_[i], i == 0);
  }
  if (!postnorm_) {  // the last down projection's residual add, fused with the final RMSNorm
    const float* w = final_norm_w_.data();
    c.rows(T, [&](int64_t r0, int64_t r1) {
      add_rmsnorm(s.tmp.data() + r0 * H, H, s.x.data() + r0 * H, H, w, sp.norm_eps, r1 - r0, H,
                  s.hn.data() + r0 * H, H, s.x.data() + r0 * H, H);
    });
  }
  pool_project(c, out, dim, normalize);
}

void NativeEncoder::embed(Ctx& c) const {
  const int64_t H = spec_.hidden_size;
  Scratch& s = c.s;
  for (int64_t t = 0; t < c.T; ++t) {
    float* x = s.x.data() + t * H;
    const float* w = word_ + c.ids[t] * H;
    if (!postnorm_) {
      std::copy(w, w + H, x);
      continue;
    }
    const float* p = position_ + (s.pos[t] + spec_.position_offset) * H;
    for (int64_t j = 0; j < H; ++j) x[j] = w[j] + p[j];  // (word + position) + type, the reference's order
    if (!token_type0_.empty()) {
      for (int64_t j = 0; j < H; ++j) x[j] += token_type0_[j];
    }
  }
  if (postnorm_) {
    c.rows(c.T, [&](int64_t r0, int64_t r1) {
      add_layernorm(s.x.data() + r0 * H, H, nullptr, 0, emb_norm_w_.data(), emb_norm_b_.data(), spec_.norm_eps,
                    r1 - r0, H, s.x.data() + r0 * H, H, nullptr, 0);
    });
  }
}

void NativeEncoder::gemm(Ctx& c, const PackedLinear& w, const float* x, int64_t m, int64_t ldx, float* y,
                         int64_t ldy, Act act) const {
  const int64_t panels = w.panels();
  const int16_t* q = nullptr;
  const float* rs = nullptr;
  if (w.integer_path(m)) {  // int8 weights: x quantised to int16 once, for every panel range
    const int64_t ld = quant_ld(w.k());
    grow(c.s.xq, m * ld), grow(c.s.x_scale, m);
    int16_t* qw = c.s.xq.data();
    float* rw = c.s.x_scale.data();
    c.rows(m, [&](int64_t r0, int64_t r1) { quantize_rows(x + r0 * ldx, r1 - r0, ldx, w.k(), qw + r0 * ld, rw + r0); });
    q = qw, rs = rw;
  }
  const float* strips = nullptr;
  if (q == nullptr && w.packs_rows(m)) {  // many rows: x packed into row strips once, for every panel range
    grow(c.s.strips, m * w.k());
    float* sw = c.s.strips.data();
    c.rows(m, [&](int64_t r0, int64_t r1) { pack_rows(x, m, w.k(), ldx, sw, r0, r1); });
    strips = sw;
  }
  const auto run = [&](int64_t p0, int64_t p1, int thread) {
    if (q != nullptr) return w.run_quantized(q, rs, m, y, ldy, act, p0, p1);
    if (strips != nullptr) return w.run_packed(strips, m, y, ldy, act, p0, p1, c.s.per_thread[thread].data());
    w.run(x, m, ldx, y, ldy, act, p0, p1, c.s.per_thread[thread].data());
  };
  if (c.pool == nullptr || panels < 2) return run(0, panels, 0);
  // Each thread streams its own contiguous runs of panels: the weight bytes split over the cores. A few
  // chunks per thread, claimed as the threads come free, so a descheduled worker cannot stall the call.
  const int chunks = static_cast<int>(std::min<int64_t>(panels, kChunksPerThread * c.n));
  c.pool->run(chunks, [&](int i, int thread) { run(panels * i / chunks, panels * (i + 1) / chunks, thread); });
}

void NativeEncoder::attention(Ctx& c, float* qkv, float* out) const {
  const EncoderSpec& sp = spec_;
  const int64_t hd = sp.head_dim, nq = sp.num_heads, nkv = sp.num_kv_heads, ld = (nq + 2 * nkv) * hd;
  AttnArgs a{qkv, qkv + nq * hd, qkv + (nq + nkv) * hd, out, ld, hd, ld, hd, ld, hd, nq * hd, hd,
             c.s.cu.data(), c.B, c.T, nq, nkv, hd, 1.f / std::sqrt(static_cast<float>(hd)), !postnorm_,
             nullptr, 0, 0, 0};
  if (!rel_bias_.empty()) {
    a.bias = c.s.bias.data();
    a.b_sh = c.max_len * c.max_len;
    a.b_si = c.max_len;
    a.bias_len = c.max_len;
  }
  if (c.pool == nullptr) return varlen_attention_units(a, 0, c.B * nkv, c.s.per_thread[0].data());
  // One chunk per (text, kv head): claimed dynamically, long texts balance themselves.
  c.pool->run(static_cast<int>(c.B * nkv),
              [&](int u, int thread) { varlen_attention_units(a, u, u + 1, c.s.per_thread[thread].data()); });
}

void NativeEncoder::postnorm_layer(Ctx& c, const Layer& l) const {
  Scratch& s = c.s;
  const int64_t T = c.T, H = spec_.hidden_size, I = l.inter;
  const float eps = spec_.norm_eps;
  gemm(c, l.qkv, s.x.data(), T, H, s.qkv.data(), 3 * H, Act::kNone);
  attention(c, s.qkv.data(), s.attn.data());
  gemm(c, l.o, s.attn.data(), T, H, s.tmp.data(), H, Act::kNone);
  auto add_ln = [&](const std::vector<float>& w, const std::vector<float>& b) {
    c.rows(T, [&](int64_t r0, int64_t r1) {  // x = LN(tmp + x), in place
      add_layernorm(s.tmp.data() + r0 * H, H, s.x.data() + r0 * H, H, w.data(), b.data(), eps, r1 - r0, H,
                    s.x.data() + r0 * H, H, nullptr, 0);
    });
  };
  add_ln(l.attn_norm_w, l.attn_norm_b);
  gemm(c, l.up, s.x.data(), T, H, s.ffn.data(), I, Act::kGelu);
  gemm(c, l.down, s.ffn.data(), T, I, s.tmp.data(), H, Act::kNone);
  add_ln(l.ffn_norm_w, l.ffn_norm_b);
}

void NativeEncoder::qwen3_layer(Ctx& c, const Layer& l, bool first) const {
  Scratch& s = c.s;
  const EncoderSpec& sp = spec_;
  const int64_t T = c.T, H = sp.hidden_size, I = l.inter, hd = sp.head_dim, nq = sp.num_heads;
  const int64_t nkv = sp.num_kv_heads, qkv_w = (nq + 2 * nkv) * hd;
  const float eps = sp.norm_eps;
  // h = RMS(r), where r = the previous layer's down projection (in tmp) + its residual (x), added here.
  c.rows(T, [&](int64_t r0, int64_t r1) {
    add_rmsnorm(first ? s.x.data() + r0 * H : s.tmp.data() + r0 * H, H, first ? nullptr : s.x.data() + r0 * H, H,
                l.attn_norm_w.data(), eps, r1 - r0, H, s.hn.data() + r0 * H, H, first ? nullptr : s.x.data() + r0 * H,
                H);
  });
  gemm(c, l.qkv, s.hn.data(), T, H, s.qkv.data(), qkv_w, Act::kNone);
  const float* qn = l.q_norm.empty() ? nullptr : l.q_norm.data();
  const float* kn = l.k_norm.empty() ? nullptr : l.k_norm.data();
  c.rows(T, [&](int64_t r0, int64_t r1) {
    for (int64_t t = r0; t < r1; ++t) {
      float* row = s.qkv.data() + t * qkv_w;
      const float* cs = s.rope.data() + t * hd;
      for (int64_t h = 0; h < nq; ++h) norm_rope_row(row + h * hd, hd, qn, eps, cs);
      for (int64_t g = 0; g < nkv; ++g) norm_rope_row(row + (nq + g) * hd, hd, kn, eps, cs);
    }
  });
  attention(c, s.qkv.data(), s.attn.data());
  gemm(c, l.o, s.attn.data(), T, nq * hd, s.tmp.data(), H, Act::kNone);
  c.rows(T, [&](int64_t r0, int64_t r1) {  // h = RMS(r = o + r)
    add_rmsnorm(s.tmp.data() + r0 * H, H, s.x.data() + r0 * H, H, l.ffn_norm_w.data(), eps, r1 - r0, H,
                s.hn.data() + r0 * H, H, s.x.data() + r0 * H, H);
  });
  gemm(c, l.up, s.hn.data(), T, H, s.ffn.data(), 2 * I, Act::kNone);
  c.rows(T, [&](int64_t r0, int64_t r1) { swiglu_rows(s.ffn.data() + r0 * 2 * I, r1 - r0, I); });
  gemm(c, l.down, s.ffn.data(), T, 2 * I, s.tmp.data(), H, Act::kNone);  // + r: in the next norm
}

void NativeEncoder::pool_project(Ctx& c, float* out, int64_t dim, bool normalize) const {
  Scratch& s = c.s;
  const int64_t H = spec_.hidden_size;
  const float* hidden = postnorm_ ? s.x.data() : s.hn.data();
  for (int64_t b = 0; b < c.B; ++b) {
    const int64_t t0 = s.cu[b], t1 = s.cu[b + 1];
    float* p = s.pooled.data() + b * H;
    if (pool_mode_ == 1 || pool_mode_ == 2) {
      const float* row = hidden + (pool_mode_ == 1 ? t0 : t1 - 1) * H;
      std::copy(row, row + H, p);
      continue;
    }
    std::fill(p, p + H, 0.f);
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = hidden + t * H;
      for (int64_t j = 0; j < H; ++j) p[j] += row[j];
    }
    const float len = static_cast<float>(t1 - t0);
    for (int64_t j = 0; j < H; ++j) p[j] /= len;
  }
  const float* src = s.pooled.data();
  int64_t ld = H;
  if (proj_) {  // the folded student -> teacher projection, on the pooled rows
    gemm(c, *proj_, s.pooled.data(), c.B, H, s.proj.data(), spec_.output_dim, Act::kNone);
    src = s.proj.data();
    ld = spec_.output_dim;
  }
  for (int64_t b = 0; b < c.B; ++b) {  // Matryoshka truncation, then F.normalize (eps 1e-12)
    const float* v = src + b * ld;
    float* o = out + b * dim;
    float norm = 1.f;
    if (normalize) {
      float ss = 0.f;
      for (int64_t j = 0; j < dim; ++j) ss += v[j] * v[j];
      norm = std::max(std::sqrt(ss), 1e-12f);
    }
    for (int64_t j = 0; j < dim; ++j) o[j] = v[j] / norm;
  }
}

}  // namespace hlm

// NativeEncoder at load: validate the spec and every tensor once, pack the linears, precompute the MPNet
// relative-position buckets and the RoPE frequencies (see native_encoder.h). The forward: native_forward.cpp.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "native_encoder.h"
#include "native_internal.h"

namespace hlm {

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("NativeEncoder: " + what); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

}  // namespace

// In the float32 arithmetic of the reference (hlm_engine/models/bert.py relative_position_bucket), checked
// against it for every distance in tests/engine/test_native_forward.py.
int32_t relative_bucket(int64_t rel, int64_t num_buckets, int64_t max_distance) {
  int64_t n = -rel;
  const int64_t half = num_buckets / 2;
  const int64_t ret = n < 0 ? half : 0;
  n = n < 0 ? -n : n;
  const int64_t max_exact = half / 2;
  if (n < max_exact) return static_cast<int32_t>(ret + n);
  float v = std::log(static_cast<float>(std::max<int64_t>(n, 1)) / static_cast<float>(max_exact));
  v = v / static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)));
  v = v * static_cast<float>(half - max_exact);
  const int64_t large = std::min<int64_t>(max_exact + static_cast<int64_t>(v), half - 1);
  return static_cast<int32_t>(ret + large);
}

const float* Weights::get(const std::string& name, const std::vector<int64_t>& shape) const {
  auto it = map.find(name);
  if (it == map.end()) bad("missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
  if (it->second.shape != shape) {
    bad("tensor '" + name + "' has shape " + shape_str(it->second.shape) + ", the config expects " + shape_str(shape));
  }
  if (it->second.data == nullptr) bad("tensor '" + name + "' has no data");
  return it->second.data;
}

std::vector<float> Weights::copy(const std::string& name, const std::vector<int64_t>& shape) const {
  const float* p = get(name, shape);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return std::vector<float>(p, p + n);
}

PackedLinear Weights::linear(const std::string& name, int64_t n, int64_t k, bool bias, WeightFormat fmt) const {
  const float* w = get(name + ".weight", {n, k});
  const float* b = bias ? get(name + ".bias", {n}) : nullptr;
  return PackedLinear(w, n, k, b, fmt);
}

NativeEncoder::NativeEncoder(const EncoderSpec& spec, const std::map<std::string, TensorView>& weights,
                             WeightFormat format, int threads, std::shared_ptr<void> keep_alive)
    : spec_(spec), format_(format), keep_alive_(std::move(keep_alive)) {
  const EncoderSpec& s = spec_;
  postnorm_ = s.arch == "bert" || s.arch == "mpnet";
  if (!postnorm_ && s.arch != "qwen3" && s.arch != "qwen2") bad("unknown arch '" + s.arch + "'");
  if (s.pooling == "mean") pool_mode_ = 0;
  else if (s.pooling == "cls") pool_mode_ = 1;
  else if (s.pooling == "last") pool_mode_ = 2;
  else bad("unknown pooling '" + s.pooling + "'; choose mean, cls or last");
  const int64_t H = s.hidden_size, hd = s.head_dim, nq = s.num_heads, nkv = s.num_kv_heads;
  if (H < 1 || s.vocab_size < 1 || nq < 1 || nkv < 1 || nq % nkv != 0) {
    bad("need hidden_size, vocab_size, num_heads >= 1 and num_kv_heads dividing num_heads (got H=" + std::to_string(H) +
        ", heads " + std::to_string(nq) + "/" + std::to_string(nkv) + ")");
  }
  // The attention kernel reads head-dim rows 8 floats at a time (cpu_attention.h); RoPE rotates halves.
  if (hd < 8 || hd % 8 != 0) bad("head_dim must be a positive multiple of 8, got " + std::to_string(hd));
  if (postnorm_ && nq * hd != H) bad("num_heads * head_dim must equal hidden_size for " + s.arch);
  if (!(s.norm_eps >= 0.f)) bad("norm_eps must be >= 0");
  for (int64_t w : s.intermediate_sizes) {
    if (w < 1) bad("every intermediate size must be >= 1, got " + std::to_string(w));
  }
  if (s.intermediate_sizes.empty()) bad("the model has no layers");

  const Weights W{weights};
  word_ = W.get("embed.word.weight", {s.vocab_size, H});
  if (postnorm_) {
    if (s.max_position_embeddings < 1) bad("max_position_embeddings must be >= 1");
    position_ = W.get("embed.position.weight", {s.max_position_embeddings, H});
    if (s.type_vocab_size > 0) token_type0_ = W.copy("embed.token_type.weight", {s.type_vocab_size, H});
    token_type0_.resize(s.type_vocab_size > 0 ? H : 0);  // only row 0: every token is type 0
    emb_norm_w_ = W.copy("embed.norm.weight", {H});
    emb_norm_b_ = W.copy("embed.norm.bias", {H});
    if (s.relative_attention_num_buckets > 0) {
      rel_bias_ = W.copy("rel_bias.weight", {s.relative_attention_num_buckets, nq});
      max_rel_ = std::max<int64_t>(s.max_position_embeddings, 1);
      rel_bucket_.resize(2 * max_rel_ + 1);
      for (int64_t d = -max_rel_; d <= max_rel_; ++d) {
        rel_bucket_[d + max_rel_] =
            relative_bucket(d, s.relative_attention_num_buckets, s.relative_attention_max_distance);
      }
    }
  } else {
    final_norm_w_ = W.copy("norm.weight", {H});
    inv_freq_.resize(hd / 2);
    for (int64_t i = 0; i < hd / 2; ++i) {  // float32, as the reference's rope_cos_sin computes them
      const float e = static_cast<float>(2 * i) / static_cast<float>(hd);
      inv_freq_[i] = 1.f / std::pow(static_cast<float>(s.rope_theta), e);
    }
  }
  const int64_t qkv_w = (nq + 2 * nkv) * hd;
  for (size_t i = 0; i < s.intermediate_sizes.size(); ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const int64_t I = s.intermediate_sizes[i];
    auto l = std::make_unique<Layer>();
    l->inter = I;
    l->qkv = W.linear(p + "qkv", qkv_w, H, s.attention_bias, format);
    if (postnorm_) {
      l->o = W.linear(p + "o", H, nq * hd, true, format);
      l->attn_norm_w = W.copy(p + "attn_norm.weight", {H});
      l->attn_norm_b = W.copy(p + "attn_norm.bias", {H});
      l->up = W.linear(p + "up", I, H, true, format);
      l->down = W.linear(p + "down", H, I, true, format);
      l->ffn_norm_w = W.copy(p + "ffn_norm.weight", {H});
      l->ffn_norm_b = W.copy(p + "ffn_norm.bias", {H});
    } else {
      l->attn_norm_w = W.copy(p + "attn_norm.weight", {H});
      if (s.qk_norm) {
        l->q_norm = W.copy(p + "q_norm.weight", {hd});
        l->k_norm = W.copy(p + "k_norm.weight", {hd});
      }
      l->o = W.linear(p + "o", H, nq * hd, false, format);
      l->ffn_norm_w = W.copy(p + "ffn_norm.weight", {H});
      l->up = W.linear(p + "gate_up", 2 * I, H, false, format);  // rows [0, I) gate, [I, 2I) up
      l->down = W.linear(p + "down", H, I, false, format);
    }
    layers_.push_back(std::move(l));
  }
  if (s.output_dim > 0) proj_ = std::make_unique<PackedLinear>(W.linear("proj", s.output_dim, H, true, format));
  set_threads(threads);
}

NativeEncoder::~NativeEncoder() = default;

int NativeEncoder::threads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pool_ ? pool_->size() : 1;
}

void NativeEncoder::set_threads(int threads) {
  if (threads < 1) bad("threads must be >= 1, got " + std::to_string(threads));
  // A forward in flight keeps the old pool alive through its own shared_ptr.
  auto pool = threads > 1 ? std::make_shared<ThreadPool>(threads) : nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  pool_ = std::move(pool);
}

size_t NativeEncoder::weight_bytes() const {
  size_t b = proj_ ? proj_->bytes() : 0;
  for (const auto& l : layers_) b += l->qkv.bytes() + l->o.bytes() + l->up.bytes() + l->down.bytes();
  return b;
}

std::unique_ptr<NativeEncoder::Scratch> NativeEncoder::take_scratch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty()) return std::make_unique<Scratch>();
  auto s = std::move(free_.back());
  free_.pop_back();
  return s;
}

void NativeEncoder::give_scratch(std::unique_ptr<Scratch> s) const {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.push_back(std::move(s));
}

}  // namespace hlm

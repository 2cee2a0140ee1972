// Packed multi-head attention on CPU (see cpu_attention.h for the why).
#include "cpu_attention.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "avx2_math.h"

namespace hlm {

namespace {

#ifdef HLM_X86
// The kernel's one inner loop, for both products: out[0:8*NV] = scale * sum_{i<n} a[i] * m[i * ld + 0:8*NV].
// Scores: a = the query row (n = head_dim), m = K^T (8*NV keys per row), scale = the softmax scale. P @ V: a = the
// softmax numerators (n = keys), m = V rows (8*NV head-dim lanes), scale 1 / sum. NV accumulators of 8
// lanes; each a[i] is one broadcast + NV FMAs, no horizontal sums.
template <int NV>
HLM_AVX2 void rows_combination(const float* a, int64_t n, const float* m, int64_t ld, float scale, float* out) {
  __m256 acc[NV];
  _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; ++i) {
    const __m256 ab = _mm256_broadcast_ss(a + i);
    const float* row = m + i * ld;
    _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) acc[c] = _mm256_fmadd_ps(ab, _mm256_loadu_ps(row + 8 * c), acc[c]);
  }
  const __m256 sc = _mm256_set1_ps(scale);
  _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], sc));
}

using CombineFn = void (*)(const float*, int64_t, const float*, int64_t, float, float*);
const CombineFn kCombine[9] = {nullptr, rows_combination<1>, rows_combination<2>, rows_combination<3>,
                               rows_combination<4>, rows_combination<5>, rows_combination<6>,
                               rows_combination<7>, rows_combination<8>};

// One query row: n visible keys (all L, or i + 1 when causal), scores -> softmax -> P @ V.
HLM_AVX2 void attend_row(const AttnArgs& a, const float* qrow, const float* brow, int64_t n, const float* kt,
                         int64_t ldk, const float* v, float* s, float* orow) {
  const int64_t d = a.head_dim;
  const int64_t nvec = (n + 7) / 8;
  for (int64_t c0 = 0; c0 < nvec; c0 += 8) {
    kCombine[std::min<int64_t>(8, nvec - c0)](qrow, d, kt + 8 * c0, ldk, a.scale, s + 8 * c0);
  }
  if (brow != nullptr) {
    for (int64_t j = 0; j < n; ++j) s[j] += brow[j];
  }
  const int64_t padded = nvec * 8;
  for (int64_t j = n; j < padded; ++j) s[j] = -std::numeric_limits<float>::infinity();
  __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < padded; j += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j));
  const __m256 m = _mm256_set1_ps(hmax(mx));
  for (int64_t j = 0; j < padded; j += 8) _mm256_storeu_ps(s + j, exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + j), m)));
  for (int64_t j = n; j < padded; ++j) s[j] = 0.f;  // masked keys: exactly 0, not exp(-87)
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < padded; j += 8) sum = _mm256_add_ps(sum, _mm256_loadu_ps(s + j));
  const float inv = 1.f / hsum(sum);
  for (int64_t c0 = 0; c0 < d; c0 += 64) {
    kCombine[std::min<int64_t>(8, (d - c0) / 8)](s, n, v + c0, a.v_st, inv, orow + c0);
  }
}

// Units [u0, u1) of (sequence, kv head); kt: head_dim x padded length, s: padded length (the scratch).
HLM_AVX2 void run_units(const AttnArgs& a, int64_t u0, int64_t u1, float* kt, float* s) {
  const int64_t group = a.hq / a.hkv;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t b = u / a.hkv, g = u % a.hkv;
    const int64_t t0 = a.cu_seqlens[b], len = a.cu_seqlens[b + 1] - t0;
    const int64_t ld = (len + 7) / 8 * 8;  // K^T row length; the zeroed tail scores 0 and is masked
    for (int64_t dd = 0; dd < a.head_dim; ++dd) {
      float* dst = kt + dd * ld;
      const float* src = a.k + t0 * a.k_st + g * a.k_sh + dd;
      for (int64_t j = 0; j < len; ++j) dst[j] = src[j * a.k_st];
      for (int64_t j = len; j < ld; ++j) dst[j] = 0.f;
    }
    const float* v = a.v + t0 * a.v_st + g * a.v_sh;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {  // GQA: the query heads sharing kv head g
      const float* bh = a.bias != nullptr ? a.bias + h * a.b_sh : nullptr;
      for (int64_t i = 0; i < len; ++i) {
        attend_row(a, a.q + (t0 + i) * a.q_st + h * a.q_sh, bh != nullptr ? bh + i * a.b_si : nullptr,
                   a.causal ? i + 1 : len, kt, ld, v, s, a.out + (t0 + i) * a.o_st + h * a.o_sh);
      }
    }
  }
}
#endif

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("varlen_attention: " + what); }

void validate(const AttnArgs& a) {
  if (a.batch < 0 || a.tokens < 0) bad("negative batch or token count");
  if (a.hq < 1 || a.hkv < 1 || a.hq % a.hkv != 0) {
    bad("query heads (" + std::to_string(a.hq) + ") must be a positive multiple of kv heads (" +
        std::to_string(a.hkv) + ")");
  }
  if (a.head_dim < 8 || a.head_dim % 8 != 0) bad("head_dim must be a positive multiple of 8, got " + std::to_string(a.head_dim));
  if (a.cu_seqlens[0] != 0) bad("cu_seqlens[0] must be 0, got " + std::to_string(a.cu_seqlens[0]));
  for (int64_t b = 0; b < a.batch; ++b) {
    const int64_t len = a.cu_seqlens[b + 1] - a.cu_seqlens[b];
    if (len < 0) bad("cu_seqlens must be non-decreasing (sequence " + std::to_string(b) + " has length " + std::to_string(len) + ")");
    if (a.bias != nullptr && len > a.bias_len) {
      bad("sequence " + std::to_string(b) + " has " + std::to_string(len) + " tokens but the bias covers " +
          std::to_string(a.bias_len));
    }
  }
  if (a.cu_seqlens[a.batch] != a.tokens) {
    bad("cu_seqlens[-1] = " + std::to_string(a.cu_seqlens[a.batch]) + " but q has " + std::to_string(a.tokens) + " tokens");
  }
}

}  // namespace

int64_t attention_scratch_floats(int64_t head_dim, int64_t max_len) {
  const int64_t ld = (max_len + 7) / 8 * 8;
  return (head_dim + 1) * ld;
}

void varlen_attention_units(const AttnArgs& a, int64_t u0, int64_t u1, float* scratch) {
#ifdef HLM_X86
  if (u1 <= u0) return;
  int64_t max_len = 0;  // of the sequences in this slice: where the K^T tile ends and the scores begin
  for (int64_t b = u0 / a.hkv; b <= (u1 - 1) / a.hkv; ++b) {
    max_len = std::max<int64_t>(max_len, a.cu_seqlens[b + 1] - a.cu_seqlens[b]);
  }
  run_units(a, u0, u1, scratch, scratch + a.head_dim * ((max_len + 7) / 8 * 8));
#else
  (void)a, (void)u0, (void)u1, (void)scratch;
#endif
}

void varlen_attention(const AttnArgs& a) {
  validate(a);
  if (!cpu_has_avx2_fma()) throw std::runtime_error("varlen_attention: this CPU lacks AVX2 + FMA");
  int64_t max_len = 0;
  for (int64_t b = 0; b < a.batch; ++b) max_len = std::max<int64_t>(max_len, a.cu_seqlens[b + 1] - a.cu_seqlens[b]);
  std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(a.head_dim, max_len)));
  varlen_attention_units(a, 0, a.batch * a.hkv, scratch.data());
}

}  // namespace hlm

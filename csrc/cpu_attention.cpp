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

// Query rows scored together: a query's ~7 tokens are one block, so each K^T load feeds kBlockRows FMAs on
// independent sums (one row at a time was one dependent FMA chain per head-dim element: latency-bound).
constexpr int kBlockRows = 8;

#ifdef HLM_X86
// P @ V for one row: out[0:8*NV] = scale * sum_{i<n} a[i] * m[i * ld + 0:8*NV], a = the softmax numerators
// (n = keys), m = V rows (8*NV head-dim lanes), scale 1 / sum. NV accumulators of 8 lanes; each a[i] is one
// broadcast + NV FMAs, no horizontal sums.
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

// Scores of R query rows (rows q_st floats apart) against 8 * nvec keys of K^T: s[r * lds + j] = scale q_r . k_j.
// R accumulators of 8 keys per vector of keys; each K^T vector is loaded once for the R rows.
template <int R>
HLM_AVX2 void score_rows(const float* q, int64_t q_st, int64_t d, const float* kt, int64_t ldk, int64_t nvec,
                         float scale, float* s, int64_t lds) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t c = 0; c < nvec; ++c) {
    __m256 acc[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t dd = 0; dd < d; ++dd) {
      const __m256 kv = _mm256_loadu_ps(kt + dd * ldk + 8 * c);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + r * q_st + dd), kv, acc[r]);
      }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(s + r * lds + 8 * c, _mm256_mul_ps(acc[r], sc));
    }
  }
}

using ScoreFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float, float*, int64_t);
const ScoreFn kScore[kBlockRows + 1] = {nullptr,       score_rows<1>, score_rows<2>, score_rows<3>, score_rows<4>,
                                        score_rows<5>, score_rows<6>, score_rows<7>, score_rows<8>};

// P @ V for two rows at once (2 x NV accumulators, each V vector loaded once):
// out_r[0:8*NV] = inv_r * sum_{i<n} p_r[i] * v[i * ld + 0:8*NV]; row 1 sums only its first n1 <= n keys
// (its later weights are exact zeros when causal, so summing them changes nothing; they are skipped anyway).
template <int NV>
HLM_AVX2 void combine2(const float* p0, const float* p1, int64_t n, const float* v, int64_t ld, float inv0,
                       float inv1, float* out0, float* out1) {
  __m256 a0[NV], a1[NV];
  _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) a0[c] = a1[c] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; ++i) {
    const __m256 b0 = _mm256_broadcast_ss(p0 + i), b1 = _mm256_broadcast_ss(p1 + i);
    const float* row = v + i * ld;
    _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) {
      const __m256 vv = _mm256_loadu_ps(row + 8 * c);
      a0[c] = _mm256_fmadd_ps(b0, vv, a0[c]);
      a1[c] = _mm256_fmadd_ps(b1, vv, a1[c]);
    }
  }
  const __m256 s0 = _mm256_set1_ps(inv0), s1 = _mm256_set1_ps(inv1);
  _Pragma("GCC unroll 8") for (int c = 0; c < NV; ++c) {
    _mm256_storeu_ps(out0 + 8 * c, _mm256_mul_ps(a0[c], s0));
    _mm256_storeu_ps(out1 + 8 * c, _mm256_mul_ps(a1[c], s1));
  }
}

using Combine2Fn = void (*)(const float*, const float*, int64_t, const float*, int64_t, float, float, float*, float*);
const Combine2Fn kCombine2[5] = {nullptr, combine2<1>, combine2<2>, combine2<3>, combine2<4>};

// All-ones lanes for keys j..j+7 with j + lane < n, given left = n - j.
HLM_AVX2 inline __m256 visible(int64_t left) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(left, 8))), iota));
}

// A row of scores -> softmax numerators in place (n visible keys, bias added, the rest of the padded row 0);
// returns 1 / their sum. The visible-key mask is a vector compare per 8 keys (no scalar tail loops).
HLM_AVX2 float softmax_row(float* s, const float* brow, int64_t n, int64_t padded) {
  if (brow != nullptr) {
    for (int64_t j = 0; j < n; ++j) s[j] += brow[j];
  }
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 mx = ninf;
  for (int64_t j = 0; j < padded; j += 8) {
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), visible(n - j)));
  }
  const __m256 m = _mm256_set1_ps(hmax(mx));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < padded; j += 8) {
    // masked keys: exactly 0, not exp(-87)
    const __m256 e = _mm256_and_ps(exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + j), m)), visible(n - j));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  return 1.f / hsum(sum);
}

// K rows [0, len) of one kv head (rows k_st floats apart, head_dim contiguous) -> K^T: kt[dd * ld + j], the tail
// j in [len, ld) zero. 8 x 8 blocks through registers (unpack / shuffle / lane permute), missing rows as zeros.
HLM_AVX2 void transpose_keys(const float* k, int64_t k_st, int64_t len, int64_t d, float* kt, int64_t ld) {
  for (int64_t j0 = 0; j0 < ld; j0 += 8) {
    const int64_t rows = std::min<int64_t>(8, len - j0);
    for (int64_t d0 = 0; d0 < d; d0 += 8) {
      __m256 r[8];
      _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i) {
        r[i] = i < rows ? _mm256_loadu_ps(k + (j0 + i) * k_st + d0) : _mm256_setzero_ps();
      }
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
      float* dst = kt + d0 * ld + j0;
      _mm256_storeu_ps(dst + 0 * ld, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_storeu_ps(dst + 1 * ld, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
  }
}

// Query rows [i0, i0 + r) of one (sequence, head): scores of the block against the keys any of its rows sees
// (all L, or up to the last row + 1 when causal), per-row softmax, then P @ V two rows at a time.
HLM_AVX2 void attend_block(const AttnArgs& a, const float* q, const float* bias, int64_t i0, int r, int64_t len,
                           const float* kt, int64_t ldk, const float* v, float* s, float* out) {
  const int64_t d = a.head_dim;
  const int64_t keys = a.causal ? i0 + r : len;
  const int64_t nvec = (keys + 7) / 8, padded = nvec * 8;
  kScore[r](q, a.q_st, d, kt, ldk, nvec, a.scale, s, ldk);
  float inv[kBlockRows];
  int64_t n[kBlockRows];
  for (int i = 0; i < r; ++i) {
    n[i] = a.causal ? i0 + i + 1 : len;
    inv[i] = softmax_row(s + i * ldk, bias != nullptr ? bias + (i0 + i) * a.b_si : nullptr, n[i], padded);
  }
  int i = 0;
  for (; i + 2 <= r; i += 2) {
    for (int64_t c0 = 0; c0 < d; c0 += 32) {
      kCombine2[std::min<int64_t>(4, (d - c0) / 8)](s + i * ldk, s + (i + 1) * ldk, n[i + 1], v + c0, a.v_st, inv[i],
                                                    inv[i + 1], out + i * a.o_st + c0, out + (i + 1) * a.o_st + c0);
    }
  }
  if (i < r) {
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
      kCombine[std::min<int64_t>(8, (d - c0) / 8)](s + i * ldk, n[i], v + c0, a.v_st, inv[i], out + i * a.o_st + c0);
    }
  }
}

// Units [u0, u1) of (sequence, kv head); kt: head_dim x padded length, s: kBlockRows x padded length (the scratch).
HLM_AVX2 void run_units(const AttnArgs& a, int64_t u0, int64_t u1, float* kt, float* s) {
  const int64_t group = a.hq / a.hkv;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t b = u / a.hkv, g = u % a.hkv;
    const int64_t t0 = a.cu_seqlens[b], len = a.cu_seqlens[b + 1] - t0;
    const int64_t ld = (len + 7) / 8 * 8;  // K^T row length; the zeroed tail scores 0 and is masked
    transpose_keys(a.k + t0 * a.k_st + g * a.k_sh, a.k_st, len, a.head_dim, kt, ld);
    const float* v = a.v + t0 * a.v_st + g * a.v_sh;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {  // GQA: the query heads sharing kv head g
      const float* bh = a.bias != nullptr ? a.bias + h * a.b_sh : nullptr;
      for (int64_t i0 = 0; i0 < len; i0 += kBlockRows) {
        const int r = static_cast<int>(std::min<int64_t>(kBlockRows, len - i0));
        attend_block(a, a.q + (t0 + i0) * a.q_st + h * a.q_sh, bh, i0, r, len, kt, ld, v, s,
                     a.out + (t0 + i0) * a.o_st + h * a.o_sh);
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
  return (head_dim + kBlockRows) * ld;  // K^T, then kBlockRows rows of scores
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

// Integer GEMM for int8 weight panels at large M (see int8_gemm.h for the why and the arithmetic).
#include "int8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "avx2_math.h"

namespace hlm {

namespace {

constexpr int kTileRows = 6;          // 6 rows x 2 int32 accumulators = 12 ymm, + 2 weights + broadcast + product
// Measured (M = 512; K = 384, 1536, 3072): blocks of 96 rows beat 48 / 192 / 512 (x stays in L2 across the
// panels) and chunks of 192 pairs beat 64 / 128 / 256 (K = 384 in one chunk; a chunk + 6 rows of x in L1).
constexpr int64_t kBlockRows = 96;    // rows quantised, then swept over every panel, per block
constexpr int64_t kChunkPairs = 192;  // k pairs per widened chunk (12 KB)
constexpr float kTinyRow = 1e-30f;    // below: the row quantises to 0 (qmax / max|x| would overflow)
// Rows up to which the tiles widen the int8 pairs in registers rather than through the L1 buffer (two tiles).
constexpr int64_t kInRegisterRows = 2 * kTileRows;

// Per-thread buffers, grown as needed, 64-byte aligned views.
template <typename T>
T* grow_aligned(std::vector<T>& v, size_t count) {
  const size_t pad = 64 / sizeof(T);
  if (v.size() < count + pad) v.resize(count + pad);
  const uintptr_t p = (reinterpret_cast<uintptr_t>(v.data()) + 63) & ~static_cast<uintptr_t>(63);
  return reinterpret_cast<T*>(p);
}

#ifdef HLM_X86
// q[0:ldq] = round(x[0:k] * qmax / max|x|) (zero past k); returns the row scale max|x| / qmax (0 for a zero or
// tiny row, NaN for a row holding NaN / Inf, whose q is all zero).
HLM_AVX2 float quantize_row(const float* x, int64_t k, int32_t qmax, int16_t* q, int64_t ldq) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float amax = hmax(mx);
  bool nan = _mm256_movemask_ps(bad) != 0;
  for (; i < k; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    nan = nan || std::isnan(x[i]);
  }
  if (nan || !std::isfinite(amax) || amax < kTinyRow) {
    std::memset(q, 0, ldq * sizeof(int16_t));
    return nan || !std::isfinite(amax) ? NAN : 0.f;
  }
  const float inv = static_cast<float>(qmax) / amax;
  const __m256 vinv = _mm256_set1_ps(inv);
  i = 0;
  for (; i + 16 <= k; i += 16) {  // round to nearest even (MXCSR default); |x * inv| <= qmax (+ an ulp)
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8));
  }
  for (; i < k; ++i) q[i] = static_cast<int16_t>(std::nearbyint(x[i] * inv));
  for (; i < ldq; ++i) q[i] = 0;
  return amax / static_cast<float>(qmax);
}

// `pairs` k pairs of one panel (packed_gemm.h's int8 layout: 32 bytes a pair, (w[k][j], w[k+1][j]) for columns
// 0-7, then 8-15) -> the same as int16, one ymm per 8 columns: a sign extension, nothing to shuffle.
HLM_AVX2 inline __m256i widen8(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
}
HLM_AVX2 void widen_pairs(const int8_t* p, int64_t pairs, int16_t* out) {
  for (int64_t t = 0; t < pairs; ++t) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 32 * t), widen8(p + 32 * t));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 32 * t + 16), widen8(p + 32 * t + 16));
  }
}

HLM_AVX2 inline __m256i bcast_pair(const int16_t* q) {
  int32_t v;
  std::memcpy(&v, q, sizeof(v));
  return _mm256_set1_epi32(v);
}

// R rows x 16 columns over `pairs` k pairs: y = act(float(q . w) * (s_r * scale) + bias). W = int16_t: the
// pairs widened once into an L1 buffer (many row tiles share them); int8_t: straight from the packed panel,
// widened in registers (a few tiles: two sign extensions per pair per tile instead of a buffer round trip).
// K may come in chunks: `first` starts the sums at 0, else from the partial sums in acc (16 int32 per row);
// `last` applies the epilogue, else stores the partial sums back to acc.
template <int R, typename W>
HLM_AVX2 void tile(const int16_t* q, int64_t ldq, const float* rs, const W* w, int64_t pairs, int32_t* acc,
                   bool first, bool last, float* y, int64_t ldy, const float* scale, const float* bias, int ncols,
                   Act act) {
  __m256i c[R][2];
  _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
    if (first) {
      c[i][0] = c[i][1] = _mm256_setzero_si256();
    } else {
      c[i][0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kPanel));
      c[i][1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * kPanel + 8));
    }
  }
  for (int64_t t = 0; t < pairs; ++t) {
    __m256i b0, b1;
    if constexpr (sizeof(W) == 2) {
      b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32 * t));
      b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32 * t + 16));
    } else {
      b0 = widen8(w + 32 * t);
      b1 = widen8(w + 32 * t + 16);
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      const __m256i a = bcast_pair(q + i * ldq + 2 * t);
      c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(a, b0));
      c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(a, b1));
      // GCC would hoist the R broadcasts to the top of the step and spill accumulators (16 ymm are exactly
      // 12 sums + 2 weights + a broadcast + a product): keep each row's loads after the previous row's sums.
      asm volatile("" : "+x"(c[i][0]), "+x"(c[i][1])::"memory");
    }
  }
  if (!last) {
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kPanel), c[i][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(acc + i * kPanel + 8), c[i][1]);
    }
    return;
  }
  const __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8);
  const __m256 bias0 = bias != nullptr ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 bias1 = bias != nullptr ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
    const __m256 r = _mm256_set1_ps(rs[i]);
    const __m256 v0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[i][0]), _mm256_mul_ps(r, s0), bias0);
    const __m256 v1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[i][1]), _mm256_mul_ps(r, s1), bias1);
    store_row16(y + i * ldy, v0, v1, act == Act::kGelu, ncols);
  }
}

template <typename W>
using TileFn = void (*)(const int16_t*, int64_t, const float*, const W*, int64_t, int32_t*, bool, bool, float*,
                        int64_t, const float*, const float*, int, Act);
template <typename W>
constexpr TileFn<W> kTiles[kTileRows + 1] = {nullptr,    tile<1, W>, tile<2, W>, tile<3, W>,
                                             tile<4, W>, tile<5, W>, tile<6, W>};

// One block of quantised rows over panels [p0, p1). More than kInRegisterRows rows: each panel chunk is widened
// once into an L1 buffer, then swept by the tiles; fewer (a query's ~7 tokens): the tiles widen it in registers.
HLM_AVX2 void block(const int16_t* q, int64_t ldq, const float* rs, int64_t rows, int64_t k, const int8_t* packed,
                    const float* scales, int64_t n, const float* bias, float* y, int64_t ldy, Act act, int64_t p0,
                    int64_t p1) {
  thread_local std::vector<int16_t> wbuf;
  thread_local std::vector<int32_t> abuf;
  const int64_t pairs = (k + 1) / 2, chunk = std::min(kChunkPairs, pairs);
  const bool in_registers = rows <= kInRegisterRows;
  int16_t* w = in_registers ? nullptr : grow_aligned(wbuf, chunk * 2 * kPanel);
  int32_t* acc = grow_aligned(abuf, pairs > chunk ? rows * kPanel : 0);
  for (int64_t p = p0; p < p1; ++p) {
    const int ncols = static_cast<int>(std::min(kPanel, n - p * kPanel));
    const float* pb = bias != nullptr ? bias + p * kPanel : nullptr;  // scales and bias: zero-padded panels
    for (int64_t t0 = 0; t0 < pairs; t0 += chunk) {
      const int64_t tc = std::min(chunk, pairs - t0);
      const int8_t* src = packed + (p * pairs + t0) * 2 * kPanel;
      if (!in_registers) widen_pairs(src, tc, w);
      for (int64_t i = 0; i < rows;) {
        const int h = static_cast<int>(std::min<int64_t>(kTileRows, rows - i));
        const int16_t* qi = q + i * ldq + 2 * t0;
        int32_t* ai = acc + i * kPanel;
        float* yi = y + i * ldy + p * kPanel;
        const bool first = t0 == 0, last = t0 + tc == pairs;
        if (in_registers) {
          kTiles<int8_t>[h](qi, ldq, rs + i, src, tc, ai, first, last, yi, ldy, scales + p * kPanel, pb, ncols, act);
        } else {
          kTiles<int16_t>[h](qi, ldq, rs + i, w, tc, ai, first, last, yi, ldy, scales + p * kPanel, pb, ncols, act);
        }
        i += h;
      }
    }
  }
}
#endif

}  // namespace

int32_t int16_qmax(int64_t k) {
  const int64_t bound = 2147483647LL / (std::max<int64_t>(k, 1) * 127);
  return static_cast<int32_t>(std::min<int64_t>(32767, bound));
}

bool int8_gemm_applies(int64_t k) {
  static const bool avx2 = cpu_has_avx2_fma();
  return k >= 1 && k <= kMaxIntK && avx2;
}

int64_t quant_ld(int64_t k) { return (k + 15) / 16 * 16; }

void quantize_rows(const float* x, int64_t m, int64_t ldx, int64_t k, int16_t* q, float* row_scale) {
#ifdef HLM_X86
  const int32_t qmax = int16_qmax(k);
  const int64_t ldq = quant_ld(k);
  for (int64_t i = 0; i < m; ++i) row_scale[i] = quantize_row(x + i * ldx, k, qmax, q + i * ldq, ldq);
#else
  (void)x, (void)m, (void)ldx, (void)k, (void)q, (void)row_scale;
#endif
}

void gemm_i8_i16(const float* x, int64_t m, int64_t k, int64_t ldx, const int8_t* packed, const float* scales,
                 int64_t n, const float* bias, float* y, int64_t ldy, Act act, int64_t p0, int64_t p1) {
#ifdef HLM_X86
  if (m <= 0 || p1 <= p0 || k <= 0) return;
  thread_local std::vector<int16_t> qbuf;
  thread_local std::vector<float> sbuf;
  const int64_t ldq = quant_ld(k), rows = std::min(kBlockRows, m);
  int16_t* q = grow_aligned(qbuf, rows * ldq);
  float* rs = grow_aligned(sbuf, rows);
  for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {  // each block quantised just before its sweep (in cache)
    const int64_t h = std::min(kBlockRows, m - r0);
    quantize_rows(x + r0 * ldx, h, ldx, k, q, rs);
    block(q, ldq, rs, h, k, packed, scales, n, bias, y + r0 * ldy, ldy, act, p0, p1);
  }
#else
  (void)x, (void)m, (void)k, (void)ldx, (void)packed, (void)scales, (void)n, (void)bias, (void)y, (void)ldy;
  (void)act, (void)p0, (void)p1;
#endif
}

void gemm_i8_i16_quantized(const int16_t* q, const float* row_scale, int64_t m, int64_t k, const int8_t* packed,
                           const float* scales, int64_t n, const float* bias, float* y, int64_t ldy, Act act,
                           int64_t p0, int64_t p1) {
#ifdef HLM_X86
  if (m <= 0 || p1 <= p0 || k <= 0) return;
  const int64_t ldq = quant_ld(k);
  for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {
    block(q + r0 * ldq, ldq, row_scale + r0, std::min(kBlockRows, m - r0), k, packed, scales, n, bias,
          y + r0 * ldy, ldy, act, p0, p1);
  }
#else
  (void)q, (void)row_scale, (void)m, (void)k, (void)packed, (void)scales, (void)n, (void)bias, (void)y, (void)ldy;
  (void)act, (void)p0, (void)p1;
#endif
}

}  // namespace hlm

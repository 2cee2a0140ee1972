// Small-M fp32 GEMM over 16-column weight panels (see small_gemm.h for the why and the layout).
#include "small_gemm.h"

#include <algorithm>
#include <cstring>

#include "avx2_math.h"

namespace hlm {

namespace {

constexpr int kMaxRows = 6;       // rows per register tile: 6 x 16 floats = 12 of the 16 ymm registers
constexpr int64_t kRowBlock = 64; // rows whose x slice stays in L1/L2 while a panel is reused across them
constexpr int64_t kPrefetchFloats = 4096;  // 16 KB: ~250 k-steps ahead, past DRAM latency

#ifdef HLM_X86
// Exact (erf) GELU, 0.5 x (1 + erf(x / sqrt 2)), as BERT/MPNet use it. erf by Abramowitz & Stegun 7.1.26
// (|error| <= 1.5e-7, the same formula ATen's vectorized erf uses) on |x|, sign restored after.
HLM_AVX2 inline __m256 gelu(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  const __m256 az = _mm256_andnot_ps(sign, z);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), az,
                                                                    _mm256_set1_ps(1.f)));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  poly = _mm256_mul_ps(poly, t);
  const __m256 erf_abs = _mm256_fnmadd_ps(poly, exp_neg(_mm256_mul_ps(_mm256_mul_ps(az, az), _mm256_set1_ps(-1.f))),
                                          _mm256_set1_ps(1.f));
  const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(sign, z));
  return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(erf, _mm256_set1_ps(1.f)));
}

HLM_AVX2 void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float tmp[8] = {0};
    std::memcpy(tmp, x + i, (n - i) * sizeof(float));
    _mm256_store_ps(tmp, gelu(_mm256_load_ps(tmp)));
    std::memcpy(x + i, tmp, (n - i) * sizeof(float));
  }
}

// One R x 16 register tile: y[0:R, 0:ncols] = x[0:R, :] @ panel + bias. Below 4 rows the 2R FMA chains
// are too few to hide FMA latency (4-5 cycles on Zen/Skylake at 2 FMAs per cycle), so KU=2 keeps a second
// set of accumulators for odd k and sums the two at the end.
template <int R, int KU>
HLM_AVX2 void tile(const float* x, int64_t ldx, const float* p, int64_t k, float* y, int64_t ldy,
                   const float* bias, int ncols, bool act_gelu) {
  __m256 c[KU][R][2];
  _Pragma("GCC unroll 8") for (int u = 0; u < KU; ++u) {
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      c[u][i][0] = _mm256_setzero_ps();
      c[u][i][1] = _mm256_setzero_ps();
    }
  }
  int64_t kk = 0;
  for (; kk + KU <= k; kk += KU) {
    _Pragma("GCC unroll 8") for (int u = 0; u < KU; ++u) {
      const float* pk = p + (kk + u) * kPanel;
      // The weights stream from DRAM once per forward; at >= 4 rows the FMAs keep the core busy long
      // enough that the hardware prefetcher falls behind: ask for the line 16 KB ahead into L2 (measured
      // 15-25% faster at 4-12 rows on EPYC; below 4 rows it costs more than it saves). Never faults.
      if (R >= 4) _mm_prefetch(reinterpret_cast<const char*>(pk + kPrefetchFloats), _MM_HINT_T1);
      const __m256 b0 = _mm256_loadu_ps(pk), b1 = _mm256_loadu_ps(pk + 8);
      _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_broadcast_ss(x + i * ldx + kk + u);
        c[u][i][0] = _mm256_fmadd_ps(a, b0, c[u][i][0]);
        c[u][i][1] = _mm256_fmadd_ps(a, b1, c[u][i][1]);
      }
    }
  }
  for (; kk < k; ++kk) {  // odd K with KU = 2
    const float* pk = p + kk * kPanel;
    const __m256 b0 = _mm256_loadu_ps(pk), b1 = _mm256_loadu_ps(pk + 8);
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      const __m256 a = _mm256_broadcast_ss(x + i * ldx + kk);
      c[0][i][0] = _mm256_fmadd_ps(a, b0, c[0][i][0]);
      c[0][i][1] = _mm256_fmadd_ps(a, b1, c[0][i][1]);
    }
  }
  alignas(32) float tmp[kPanel];
  __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
  if (bias != nullptr) {
    std::memset(tmp, 0, sizeof(tmp));
    std::memcpy(tmp, bias, ncols * sizeof(float));
    bias0 = _mm256_load_ps(tmp);
    bias1 = _mm256_load_ps(tmp + 8);
  }
  _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
    __m256 v0 = c[0][i][0], v1 = c[0][i][1];
    if (KU == 2) {
      v0 = _mm256_add_ps(v0, c[KU - 1][i][0]);
      v1 = _mm256_add_ps(v1, c[KU - 1][i][1]);
    }
    v0 = _mm256_add_ps(v0, bias0);
    v1 = _mm256_add_ps(v1, bias1);
    if (act_gelu) {  // the epilogue, on registers: no second pass over y
      v0 = gelu(v0);
      v1 = gelu(v1);
    }
    float* yi = y + i * ldy;
    if (ncols == kPanel) {
      _mm256_storeu_ps(yi, v0);
      _mm256_storeu_ps(yi + 8, v1);
    } else {  // the zero-padded last panel: store only the real columns
      _mm256_store_ps(tmp, v0);
      _mm256_store_ps(tmp + 8, v1);
      std::memcpy(yi, tmp, ncols * sizeof(float));
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, const float*, int, bool);
const TileFn kTiles[kMaxRows + 1] = {nullptr,       tile<1, 2>, tile<2, 2>, tile<3, 2>,
                                     tile<4, 1>,    tile<5, 1>, tile<6, 1>};
#endif

struct Job {
  const float* x;
  int64_t m, k, ldx;
  const float* packed;
  int64_t n;
  const float* bias;
  float* y;
  int64_t ldy;
  bool act_gelu;
};

// How to cut `rows` (<= kRowBlock) into register tiles. A tile of R rows costs about max(FMA latency /
// accumulator sets, 2R FMAs / 2 per cycle) cycles per k step: R = 1..6 -> 2.5, 2.5, 3, 5, 5, 6 (in half
// cycles below). The cheapest cut is not the even one: 8 rows as 5 + 3 (8 cycles) beats 4 + 4 (10) and
// 6 + 2 (8.5). Solved once by dynamic programming; ties keep the larger first tile (fewer panel passes).
struct TilePlan {
  int8_t first[kRowBlock + 1];  // first tile's height for that many rows; the rest follow the same table
  TilePlan() {
    constexpr int kCost[kMaxRows + 1] = {0, 5, 5, 6, 10, 10, 12};
    int best[kRowBlock + 1] = {0};
    for (int m = 1; m <= kRowBlock; ++m) {
      best[m] = 1 << 30;
      for (int r = std::min(m, kMaxRows); r >= 1; --r) {
        if (kCost[r] + best[m - r] < best[m]) {
          best[m] = kCost[r] + best[m - r];
          first[m] = static_cast<int8_t>(r);
        }
      }
    }
    first[0] = 0;
  }
};
const TilePlan kPlan;

// Rows go in blocks of kRowBlock; inside a block each panel (16 x K floats, L1/L2-resident after its
// first tile) is swept by the planned row tiles.
void run(const Job& j) {
#ifdef HLM_X86
  const int64_t panels = (j.n + kPanel - 1) / kPanel;
  for (int64_t r0 = 0; r0 < j.m; r0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, j.m - r0);
    for (int64_t p = 0; p < panels; ++p) {
      const int ncols = static_cast<int>(std::min(kPanel, j.n - p * kPanel));
      const float* panel = j.packed + p * j.k * kPanel;
      const float* bias = j.bias != nullptr ? j.bias + p * kPanel : nullptr;
      for (int64_t r = r0, left = rows; left > 0;) {
        const int h = kPlan.first[left];
        kTiles[h](j.x + r * j.ldx, j.ldx, panel, j.k, j.y + r * j.ldy + p * kPanel, j.ldy, bias, ncols,
                  j.act_gelu);
        r += h;
        left -= h;
      }
    }
  }
#else
  (void)j;
#endif
}

}  // namespace

bool small_gemm_supported() { return cpu_has_avx2_fma(); }

int64_t packed_size(int64_t n, int64_t k) { return (n + kPanel - 1) / kPanel * kPanel * k; }

void pack_weight(const float* w, int64_t n, int64_t k, float* out) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t kk = 0; kk < k; ++kk) {
      float* dst = out + (p * k + kk) * kPanel;
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t row = p * kPanel + j;
        dst[j] = row < n ? w[row * k + kk] : 0.f;
      }
    }
  }
}

void gelu_inplace(float* x, int64_t n) {
#ifdef HLM_X86
  gelu_avx2(x, n);
#else
  (void)x, (void)n;
#endif
}

void small_gemm(const float* x, int64_t m, int64_t k, int64_t ldx, const float* packed, int64_t n,
                const float* bias, float* y, int64_t ldy, bool act_gelu) {
  if (m <= 0 || n <= 0) return;
  if (k == 0) {  // an empty sum: bias (or 0) broadcast
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) y[i * ldy + j] = bias != nullptr ? bias[j] : 0.f;
      if (act_gelu) gelu_inplace(y + i * ldy, n);
    }
    return;
  }
  run(Job{x, m, k, ldx, packed, n, bias, y, ldy, act_gelu});
}

}  // namespace hlm

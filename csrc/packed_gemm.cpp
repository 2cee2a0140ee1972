// Small-M GEMM over packed fp32 / bf16 / int8 weight panels (see packed_gemm.h for the why and the layout).
#include "packed_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "avx2_math.h"
#include "int8_gemm.h"
#include "weight_heap.h"

namespace hlm {

namespace {

constexpr int kMaxRows = 6;        // rows per register tile: 6 x 16 floats = 12 of the 16 ymm registers
constexpr int64_t kRowBlock = 64;  // rows whose x slice stays in L1/L2 while a panel is reused across them
constexpr int64_t kPrefetchBytes = 16384;  // ~250 fp32 k-steps ahead: past DRAM latency at one core's stream
constexpr int64_t kWidenRows = 3 * kMaxRows;  // compressed weights serving more rows are widened once
constexpr int64_t kChunk = 128;            // K steps per chunk when several row tiles share a panel (8 KB fp32)
// Many rows (a corpus or teacher batch: 64 texts x ~20 tokens): x is first packed into row strips (below) and
// swept in blocks of kPackBlock rows x at most kPackK steps (~220 KB: stays in L2) while each 16-column weight
// chunk (<= kPackK x 16 fp32 = 24 KB) stays in L1 across every strip of the block. Unpacked, each 6-row tile
// broadcasts from 6 rows ldx apart that L2 re-serves for every panel; packed, it reads one sequential
// stream (the BLIS layout). Measured on Zen 3, one core, M = 1224, MPNet's K = 768 / 3072, interleaved runs:
// +2-3% over 64-row blocks (59-60 -> 61-62 GFLOP/s on a day MKL's sgemm did 62-66): small, the kernel was
// already near the FMA roof; the gain is steadier speed at large M.
constexpr int64_t kPackRows = 96;  // from this many rows (measured)
constexpr int64_t kPackBlock = 144;
// K is cut into equal chunks of at most kPackK steps, so K = 384 (MiniLM's QKV, output, FFN-in) is one chunk:
// with 256-step chunks the 128-step remainder stored and re-read every partial sum, and M = 424 x N = 1536 ran
// at 63-67 GFLOP/s against 85-89 for one chunk (best of 40, Zen 3, one core).
constexpr int64_t kPackK = 384;
// bf16 rows of 16: the column at each storage position (see packed_gemm.h).
constexpr int kBf16Order[kPanel] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};

#ifdef HLM_X86
// The 16 weights of one k step as two fp32 vectors (columns 0-7, 8-15).
HLM_AVX2 inline void load16(const float* p, __m256& b0, __m256& b1) {
  b0 = _mm256_loadu_ps(p);
  b1 = _mm256_loadu_ps(p + 8);
}
HLM_AVX2 inline void load16(const uint16_t* p, __m256& b0, __m256& b1) {
  // bf16 is the top half of an fp32. 32-bit word j holds column j below column j + 8: a shift widens the
  // low one, a mask the high one, exactly (no zero register: the 6-row tile needs all 16).
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  b0 = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
  b1 = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

// One R x 16 register tile: y[0:R, 0:ncols] = act(scale * (x[0:R, :] @ panel) + bias). Below 4 rows the 2R FMA
// chains are too few to hide FMA latency (4-5 cycles on Zen/Skylake at 2 FMAs per cycle), so KU=2 keeps a
// second set of accumulators for odd k and sums the two at the end. One prefetch per 64-byte line of
// weights: 1 or 2 k steps of fp32, bf16.
// K may come in chunks (see run_panels): `first` starts the sums at 0, else from the partial sums the previous
// chunk left in y; `last` applies the epilogue, else stores the raw partial sums.
// PA (packed activations): x is a row strip (pack_rows), x[kk * R + i] instead of x[i * ldx + kk].
// R = 7 (fp32 only): 14 accumulators leave one register for the weights and one for a broadcast, so each k step
// runs columns 0-7 then 8-15, broadcasting the 7 activations twice (L1 hits). One pass over the weights: the
// chunked 5 + 2 tiles stalled the stream while the second tile re-read the chunk (7-token queries, the 24
// MiniLM linears with their weights past the L3, in-process A/B: 2.62 -> 2.18 ms median, faster in 79 of 80;
// with the weights cache-resident both take 0.32 ms a layer). bf16 is slower this way (its widening needs
// registers and vector-integer slots: 1.71 -> 2.02 ms), so it keeps 5 + 2.
template <int R, int KU, typename T, bool PA = false>
HLM_AVX2 void tile(const float* x, int64_t ldx, const T* p, int64_t k, float* y, int64_t ldy, const float* scale,
                   const float* bias, int ncols, Act act, bool first, bool last) {
  constexpr int64_t kLine = 64 / (kPanel * sizeof(T));  // k steps per cache line of weights: 1, 2
  alignas(32) float tmp[kPanel];
  __m256 c[KU][R][2];
  _Pragma("GCC unroll 8") for (int u = 0; u < KU; ++u) {
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      c[u][i][0] = _mm256_setzero_ps();
      c[u][i][1] = _mm256_setzero_ps();
    }
  }
  if (!first) {
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      const float* yi = y + i * ldy;
      if (ncols != kPanel) {  // (a library memcpy per row would cost as much as a chunk's FMAs)
        std::memset(tmp, 0, sizeof(tmp));
        std::memcpy(tmp, yi, ncols * sizeof(float));
        yi = tmp;
      }
      c[0][i][0] = _mm256_loadu_ps(yi);
      c[0][i][1] = _mm256_loadu_ps(yi + 8);
    }
  }
  int64_t kk = 0;
  for (; kk + KU <= k; kk += KU) {
    // The weights stream from DRAM once per forward; at >= 4 rows the FMAs keep the core busy long enough
    // that the hardware prefetcher falls behind: ask for the line 16 KB ahead into L2 (measured 15-25%
    // faster at 4-12 rows on EPYC; below 4 rows it costs more than it saves). Never faults. One per line;
    // the step loop is not unrolled past KU, which would need more than the 16 ymm registers at 6 rows.
    if (R >= 4 && (kk & (kLine - 1)) == 0) {
      _mm_prefetch(reinterpret_cast<const char*>(p + kk * kPanel) + kPrefetchBytes, _MM_HINT_T1);
    }
    if constexpr (R == 7) {
      static_assert(std::is_same<T, float>::value && KU == 1, "the 7-row tile is fp32, one accumulator set");
      const __m256 b0 = _mm256_loadu_ps(p + kk * kPanel);
      _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
        c[0][i][0] = _mm256_fmadd_ps(_mm256_broadcast_ss(PA ? x + kk * R + i : x + i * ldx + kk), b0, c[0][i][0]);
      }
      __asm__ volatile("" ::: "memory");  // broadcast again below: 7 live broadcasts would spill accumulators
      const __m256 b1 = _mm256_loadu_ps(p + kk * kPanel + 8);
      _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
        c[0][i][1] = _mm256_fmadd_ps(_mm256_broadcast_ss(PA ? x + kk * R + i : x + i * ldx + kk), b1, c[0][i][1]);
      }
      continue;
    }
    _Pragma("GCC unroll 2") for (int u = 0; u < KU; ++u) {
      __m256 b0, b1;
      load16(p + (kk + u) * kPanel, b0, b1);
      _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
        const __m256 a = _mm256_broadcast_ss(PA ? x + (kk + u) * R + i : x + i * ldx + kk + u);
        c[u][i][0] = _mm256_fmadd_ps(a, b0, c[u][i][0]);
        c[u][i][1] = _mm256_fmadd_ps(a, b1, c[u][i][1]);
      }
    }
  }
  for (; kk < k; ++kk) {  // the K tail (odd K with KU = 2)
    __m256 b0, b1;
    load16(p + kk * kPanel, b0, b1);
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      const __m256 a = _mm256_broadcast_ss(PA ? x + kk * R + i : x + i * ldx + kk);
      c[0][i][0] = _mm256_fmadd_ps(a, b0, c[0][i][0]);
      c[0][i][1] = _mm256_fmadd_ps(a, b1, c[0][i][1]);
    }
  }
  if (!last) {  // raw partial sums for the next chunk
    _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
      __m256 v0 = c[0][i][0], v1 = c[0][i][1];
      if (KU == 2) {
        v0 = _mm256_add_ps(v0, c[KU - 1][i][0]);
        v1 = _mm256_add_ps(v1, c[KU - 1][i][1]);
      }
      float* yi = y + i * ldy;
      if (ncols == kPanel) {
        _mm256_storeu_ps(yi, v0);
        _mm256_storeu_ps(yi + 8, v1);
      } else {
        _mm256_store_ps(tmp, v0);
        _mm256_store_ps(tmp + 8, v1);
        std::memcpy(yi, tmp, ncols * sizeof(float));
      }
    }
    return;
  }
  __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
  if (bias != nullptr && ncols == kPanel) {  // a full panel reads its 16 biases in place (in-process A/B,
    bias0 = _mm256_loadu_ps(bias);              // M = 424, K = 384: +0.5-1.2%, faster in 35-57 of 60)
    bias1 = _mm256_loadu_ps(bias + 8);
  } else if (bias != nullptr) {  // copied: a caller's unpadded bias may end inside this last panel
    std::memset(tmp, 0, sizeof(tmp));
    std::memcpy(tmp, bias, ncols * sizeof(float));
    bias0 = _mm256_load_ps(tmp);
    bias1 = _mm256_load_ps(tmp + 8);
  }
  const __m256 s0 = scale != nullptr ? _mm256_loadu_ps(scale) : _mm256_set1_ps(1.f);
  const __m256 s1 = scale != nullptr ? _mm256_loadu_ps(scale + 8) : _mm256_set1_ps(1.f);
  _Pragma("GCC unroll 8") for (int i = 0; i < R; ++i) {
    __m256 v0 = c[0][i][0], v1 = c[0][i][1];
    if (KU == 2) {
      v0 = _mm256_add_ps(v0, c[KU - 1][i][0]);
      v1 = _mm256_add_ps(v1, c[KU - 1][i][1]);
    }
    v0 = _mm256_fmadd_ps(v0, s0, bias0);  // scale 1 (exact) outside int8
    v1 = _mm256_fmadd_ps(v1, s1, bias1);
    store_row16(y + i * ldy, v0, v1, act == Act::kGelu, ncols);
  }
}

template <typename T>
using TileFn = void (*)(const float*, int64_t, const T*, int64_t, float*, int64_t, const float*, const float*, int,
                        Act, bool, bool);
template <typename T>
constexpr TileFn<T> kTiles[kMaxRows + 1] = {nullptr,          tile<1, 2, T>, tile<2, 2, T>, tile<3, 2, T>,
                                            tile<4, 1, T>,    tile<5, 1, T>, tile<6, 1, T>};
template <typename T>
constexpr TileFn<T> kPackedTiles[kMaxRows + 1] = {nullptr,
                                                  tile<1, 2, T, true>, tile<2, 2, T, true>, tile<3, 2, T, true>,
                                                  tile<4, 1, T, true>, tile<5, 1, T, true>, tile<6, 1, T, true>};

// A bf16 panel widened to fp32, for row blocks that reuse it many times.
HLM_AVX2 void widen(const uint16_t* p, int64_t k, const float*, float* out) {
  for (int64_t kk = 0; kk < k; ++kk) {
    __m256 b0, b1;
    load16(p + kk * kPanel, b0, b1);
    _mm256_storeu_ps(out + kk * kPanel, b0);
    _mm256_storeu_ps(out + kk * kPanel + 8, b1);
  }
}
HLM_AVX2 void widen(const float*, int64_t, const float*, float*) {}
#endif

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

// The packed path's row strips: 6 rows each while more than kRowBlock rows are left, the rest cut as
// run_panels cuts a block (kPlan). Strip [start, start + h) is stored k-major: strips[start * K + kk * h + i].
inline int strip_rows(int64_t left) { return left > kRowBlock ? kMaxRows : kPlan.first[left]; }

void strip_of(int64_t m, int64_t row, int64_t& start, int& h) {
  const int64_t head = m > kRowBlock ? (m - kRowBlock + kMaxRows - 1) / kMaxRows * kMaxRows : 0;
  if (row < head) {
    start = row - row % kMaxRows;
    h = kMaxRows;
    return;
  }
  start = head;
  for (int64_t left = m - head;;) {
    h = kPlan.first[left];
    if (row < start + h) return;
    start += h;
    left -= h;
  }
}

struct Job {
  const float* x;
  int64_t m, k, ldx;
  const void* packed;
  const float* scales;  // int8 only
  int64_t n;
  const float* bias;
  float* y;
  int64_t ldy;
  Act act;
};

// Rows go in blocks of kRowBlock; inside a block each panel (16 x K weights) is swept by the planned row tiles.
// When a block needs more than one tile, K goes in chunks of kChunk steps and every tile runs over a chunk
// before the next chunk: the first tile streams the chunk from DRAM (prefetching ahead), the others re-read
// it from L1, so the weight stream never waits for a whole panel's worth of L1-bound tiles (7-12 token
// queries: two tiles; fp32's 7 rows take one 7-row tile instead, see tile). Compressed chunks serving many
// tiles are widened to fp32 once (into `scratch`).
template <typename T>
void run_panels(const Job& j, int64_t p0, int64_t p1, float* scratch) {
#ifdef HLM_X86
  const T* packed = static_cast<const T*>(j.packed);
  for (int64_t r0 = 0; r0 < j.m; r0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, j.m - r0);
    const bool seven = std::is_same<T, float>::value && rows == 7;  // one 7-row tile (see tile)
    const bool tiles = !seven && rows > kPlan.first[rows];           // more than one tile
    const int64_t chunk = tiles ? kChunk : j.k;
    // Widening costs ~3 cycles per k step once, converting in registers ~1-2 per tile: it pays only from ~3
    // tiles (at 7-12 rows, two tiles, in-register conversion measured ~1.8x faster than widening).
    const bool wide = !std::is_same<T, float>::value && scratch != nullptr && rows > kWidenRows;
    for (int64_t p = p0; p < p1; ++p) {
      const int ncols = static_cast<int>(std::min(kPanel, j.n - p * kPanel));
      const T* panel = packed + p * j.k * kPanel;
      const float* bias = j.bias != nullptr ? j.bias + p * kPanel : nullptr;
      const float* scale = j.scales != nullptr ? j.scales + p * kPanel : nullptr;
      for (int64_t k0 = 0; k0 < j.k; k0 += chunk) {
        const int64_t kc = std::min(chunk, j.k - k0);
        const bool first = k0 == 0, last = k0 + kc == j.k;
        if (wide) widen(panel + k0 * kPanel, kc, scale, scratch);
        if constexpr (std::is_same<T, float>::value) {
          if (seven) {
            tile<7, 1, float>(j.x + r0 * j.ldx + k0, j.ldx, panel + k0 * kPanel, kc, j.y + r0 * j.ldy + p * kPanel,
                              j.ldy, scale, bias, ncols, j.act, first, last);
            continue;
          }
        }
        for (int64_t r = r0, left = rows; left > 0;) {
          const int h = kPlan.first[left];
          const float* xr = j.x + r * j.ldx + k0;
          float* yr = j.y + r * j.ldy + p * kPanel;
          if (wide) {
            kTiles<float>[h](xr, j.ldx, scratch, kc, yr, j.ldy, nullptr, bias, ncols, j.act, first, last);
          } else {
            kTiles<T>[h](xr, j.ldx, panel + k0 * kPanel, kc, yr, j.ldy, scale, bias, ncols, j.act, first, last);
          }
          r += h;
          left -= h;
        }
      }
    }
  }
#else
  (void)j, (void)p0, (void)p1, (void)scratch;
#endif
}

// The packed path's K chunk: K split into equal parts of at most kPackK steps.
inline int64_t pack_chunk(int64_t k) {
  const int64_t parts = (k + kPackK - 1) / kPackK;
  return parts > 0 ? (k + parts - 1) / parts : 1;
}

// run_panels on x packed into strips (j.x = the strips; j.ldx unused): blocks of >= kPackBlock rows, K in
// pack_chunk steps; each weight chunk (compressed ones widened to fp32 once) is swept by every strip of the block.
template <typename T>
void run_packed_panels(const Job& j, int64_t p0, int64_t p1, float* scratch) {
#ifdef HLM_X86
  const T* packed = static_cast<const T*>(j.packed);
  const bool wide = !std::is_same<T, float>::value;
  for (int64_t b0 = 0, left = j.m; left > 0;) {
    int64_t brows = 0;
    for (int64_t l = left; l > 0 && brows < kPackBlock;) {
      const int h = strip_rows(l);
      brows += h;
      l -= h;
    }
    const int64_t step = pack_chunk(j.k);
    for (int64_t k0 = 0; k0 < j.k; k0 += step) {
      const int64_t kc = std::min(step, j.k - k0);
      const bool first = k0 == 0, last = k0 + kc == j.k;
      for (int64_t p = p0; p < p1; ++p) {
        const int ncols = static_cast<int>(std::min(kPanel, j.n - p * kPanel));
        const T* chunk = packed + (p * j.k + k0) * kPanel;
        const float* bias = j.bias != nullptr ? j.bias + p * kPanel : nullptr;
        const float* scale = j.scales != nullptr ? j.scales + p * kPanel : nullptr;
        if (wide) widen(chunk, kc, scale, scratch);
        for (int64_t r = b0, l = left; r < b0 + brows;) {
          const int h = strip_rows(l);
          const float* a = j.x + r * j.k + k0 * h;
          float* yr = j.y + r * j.ldy + p * kPanel;
          if (wide) {
            kPackedTiles<float>[h](a, 0, scratch, kc, yr, j.ldy, nullptr, bias, ncols, j.act, first, last);
          } else {
            kPackedTiles<T>[h](a, 0, chunk, kc, yr, j.ldy, scale, bias, ncols, j.act, first, last);
          }
          r += h;
          l -= h;
        }
      }
    }
    b0 += brows;
    left -= brows;
  }
#else
  (void)j, (void)p0, (void)p1, (void)scratch;
#endif
}

bool packs(WeightFormat fmt, int64_t m, int64_t k) {
  return m >= kPackRows && k > 0 && fmt != WeightFormat::kI8;  // int8: the integer path (int8_gemm.h)
}

void run_packed_job(const Job& j, WeightFormat fmt, int64_t p0, int64_t p1, float* scratch) {
  if (j.m <= 0 || p1 <= p0) return;
  thread_local std::vector<float> own;
  if (fmt != WeightFormat::kF32 && scratch == nullptr) {
    own.resize(kPackK * kPanel);
    scratch = own.data();
  }
  switch (fmt) {
    case WeightFormat::kF32: return run_packed_panels<float>(j, p0, p1, scratch);
    case WeightFormat::kBF16: return run_packed_panels<uint16_t>(j, p0, p1, scratch);
    case WeightFormat::kI8: throw std::invalid_argument("PackedLinear::run_packed: int8 weights take run_quantized");
  }
}

void run_job(const Job& j, WeightFormat fmt, int64_t p0, int64_t p1, float* scratch) {
  if (j.m <= 0 || p1 <= p0) return;
  if (j.k == 0) {  // an empty sum: bias (or 0) broadcast, then the activation
    for (int64_t i = 0; i < j.m; ++i) {
      for (int64_t c = p0 * kPanel; c < std::min(j.n, p1 * kPanel); ++c) {
        const float v = j.bias != nullptr ? j.bias[c] : 0.f;
        j.y[i * j.ldy + c] = j.act == Act::kGelu ? 0.5f * v * (1.f + std::erf(v * 0.70710678f)) : v;
      }
    }
    return;
  }
  if (packs(fmt, j.m, j.k)) {  // many rows: pack x into strips in this thread's buffer, then sweep them
    thread_local std::vector<float> strips;
    strips.resize(static_cast<size_t>(j.m * j.k));
    pack_rows(j.x, j.m, j.k, j.ldx, strips.data(), 0, j.m);
    Job pj = j;
    pj.x = strips.data();
    return run_packed_job(pj, fmt, p0, p1, scratch);
  }
  switch (fmt) {
    case WeightFormat::kF32: return run_panels<float>(j, p0, p1, scratch);
    case WeightFormat::kBF16: return run_panels<uint16_t>(j, p0, p1, scratch);
    case WeightFormat::kI8:  // integer multiply-adds at every row count (int8_gemm.h)
      if (!int8_gemm_applies(j.k)) throw std::runtime_error("PackedLinear: int8 weights need a CPU with AVX2 + FMA");
      return gemm_i8_i16(j.x, j.m, j.k, j.ldx, static_cast<const int8_t*>(j.packed), j.scales, j.n, j.bias, j.y,
                         j.ldy, j.act, p0, p1);
  }
}

// Zeroed, 64-byte aligned; large panels on huge pages (weight_heap.h).
template <typename T>
T* aligned_alloc_n(size_t count) {
  return static_cast<T*>(weight_alloc(count * sizeof(T)));
}

}  // namespace

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "fp32") return WeightFormat::kF32;
  if (name == "bf16") return WeightFormat::kBF16;
  if (name == "int8") return WeightFormat::kI8;
  throw std::invalid_argument("unknown weights format '" + name + "'; choose fp32, bf16 or int8");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kI8: return "int8";
    default: return "fp32";
  }
}

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round half to even
  return static_cast<uint16_t>(u >> 16);
}

void PackedLinear::Free::operator()(void* p) const { weight_free(p); }

PackedLinear::PackedLinear(const float* w, int64_t n, int64_t k, const float* bias, WeightFormat fmt)
    : n_(n), k_(k), fmt_(fmt) {
  if (n < 1 || k < 0) throw std::invalid_argument("PackedLinear: need n >= 1 and k >= 0");
  const int64_t panels = this->panels(), cols = panels * kPanel;
  if (bias != nullptr) {
    bias_.reset(aligned_alloc_n<float>(cols));
    std::memcpy(bias_.get(), bias, n * sizeof(float));
  }
  if (fmt == WeightFormat::kF32) {
    float* out = aligned_alloc_n<float>(cols * k);
    data_.reset(reinterpret_cast<uint8_t*>(out));
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t j = 0; j < kPanel && p * kPanel + j < n; ++j) {
          out[(p * k + kk) * kPanel + j] = w[(p * kPanel + j) * k + kk];
        }
  } else if (fmt == WeightFormat::kBF16) {
    uint16_t* out = aligned_alloc_n<uint16_t>(cols * k);
    data_.reset(reinterpret_cast<uint8_t*>(out));
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t s = 0; s < kPanel; ++s) {
          const int64_t row = p * kPanel + kBf16Order[s];
          if (row < n) out[(p * k + kk) * kPanel + s] = to_bf16(w[row * k + kk]);
        }
  } else {
    if (k > kMaxIntK) {
      throw std::invalid_argument("PackedLinear: int8 weights need K <= " + std::to_string(kMaxIntK) +
                                  " (the integer path's int32 sums), got K = " + std::to_string(k));
    }
    const int64_t pairs = (k + 1) / 2;
    int8_t* out = aligned_alloc_n<int8_t>(cols * 2 * pairs);  // zeroed: odd K's last pair, padded columns
    data_.reset(reinterpret_cast<uint8_t*>(out));
    scales_.reset(aligned_alloc_n<float>(cols));
    for (int64_t row = 0; row < n; ++row) {
      float mx = 0.f;
      for (int64_t kk = 0; kk < k; ++kk) mx = std::max(mx, std::fabs(w[row * k + kk]));
      const float scale = mx > 0.f ? mx / 127.f : 1.f;  // an all-zero row: any scale, q = 0
      scales_.get()[row] = scale;
      const int64_t p = row / kPanel, j = row % kPanel;
      // pair t of panel p: 32 bytes, columns 0-7 then 8-15, each column's (k = 2t, 2t + 1) side by side
      int8_t* panel = out + p * pairs * 2 * kPanel + (j / 8) * kPanel + (j % 8) * 2;
      for (int64_t kk = 0; kk < k; ++kk) {
        const float q = std::nearbyint(w[row * k + kk] / scale);
        panel[(kk / 2) * 2 * kPanel + kk % 2] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, q)));
      }
    }
  }
}

size_t PackedLinear::bytes() const {
  const size_t cols = static_cast<size_t>(panels() * kPanel);
  const size_t stored = fmt_ == WeightFormat::kF32    ? 4 * static_cast<size_t>(k_)
                        : fmt_ == WeightFormat::kBF16 ? 2 * static_cast<size_t>(k_)
                                                      : 2 * static_cast<size_t>((k_ + 1) / 2);  // int8 pairs
  return cols * stored + (scales_ ? cols * 4 : 0) + (bias_ ? cols * 4 : 0);
}

void PackedLinear::run(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy, Act act, int64_t p0,
                       int64_t p1, float* scratch) const {
  const Job j{x, m, k_, ldx, data_.get(), scales_.get(), n_, bias_.get(), y, ldy, act};
  run_job(j, fmt_, std::max<int64_t>(p0, 0), std::min(p1, panels()), scratch);
}

bool PackedLinear::integer_path(int64_t m) const {
  return fmt_ == WeightFormat::kI8 && m >= 1 && int8_gemm_applies(k_);
}

void PackedLinear::run_quantized(const int16_t* q, const float* row_scale, int64_t m, float* y, int64_t ldy, Act act,
                                 int64_t p0, int64_t p1) const {
  if (fmt_ != WeightFormat::kI8) throw std::invalid_argument("PackedLinear::run_quantized: int8 weights only");
  gemm_i8_i16_quantized(q, row_scale, m, k_, reinterpret_cast<const int8_t*>(data_.get()), scales_.get(), n_,
                        bias_.get(), y, ldy, act, std::max<int64_t>(p0, 0), std::min(p1, panels()));
}

int64_t dequant_scratch_floats(int64_t k) { return std::min(k, std::max(kChunk, kPackK)) * kPanel; }

namespace {

// One whole 6-row strip (nearly all of a big batch), 4 k steps at a time: rows 0-3 transposed as a 4 x 4 block,
// rows 4-5 interleaved, every store sequential. SSE only (the x86-64 baseline). The scalar row-by-row copy
// wrote 6 floats apart and ran at ~1.5 floats per ns: 5-7% of a K = 1536 GEMM's time at M = 424.
void pack_strip6(const float* x, int64_t ldx, int64_t k, float* dst) {
  int64_t kk = 0;
#ifdef HLM_X86
  const float *s0 = x, *s1 = x + ldx, *s2 = x + 2 * ldx, *s3 = x + 3 * ldx, *s4 = x + 4 * ldx, *s5 = x + 5 * ldx;
  for (; kk + 4 <= k; kk += 4) {
    __m128 a0 = _mm_loadu_ps(s0 + kk), a1 = _mm_loadu_ps(s1 + kk), a2 = _mm_loadu_ps(s2 + kk),
           a3 = _mm_loadu_ps(s3 + kk);
    _MM_TRANSPOSE4_PS(a0, a1, a2, a3);  // a_j: rows 0-3 at step kk + j
    const __m128 b4 = _mm_loadu_ps(s4 + kk), b5 = _mm_loadu_ps(s5 + kk);
    const __m128 lo = _mm_unpacklo_ps(b4, b5), hi = _mm_unpackhi_ps(b4, b5);  // rows 4-5 at steps kk..kk+1, +2..+3
    float* d = dst + kk * kMaxRows;
    _mm_storeu_ps(d, a0);
    _mm_storel_pi(reinterpret_cast<__m64*>(d + 4), lo);
    _mm_storeu_ps(d + 6, a1);
    _mm_storeh_pi(reinterpret_cast<__m64*>(d + 10), lo);
    _mm_storeu_ps(d + 12, a2);
    _mm_storel_pi(reinterpret_cast<__m64*>(d + 16), hi);
    _mm_storeu_ps(d + 18, a3);
    _mm_storeh_pi(reinterpret_cast<__m64*>(d + 22), hi);
  }
#endif
  for (; kk < k; ++kk) {
    for (int i = 0; i < kMaxRows; ++i) dst[kk * kMaxRows + i] = x[i * ldx + kk];
  }
}

}  // namespace

void pack_rows(const float* x, int64_t m, int64_t k, int64_t ldx, float* strips, int64_t r0, int64_t r1) {
  r1 = std::min(r1, m);
  for (int64_t row = std::max<int64_t>(r0, 0); row < r1;) {
    int64_t start;
    int h;
    strip_of(m, row, start, h);
    const int64_t end = std::min<int64_t>(start + h, r1);  // rows [row, end) of strip [start, start + h)
    if (h == kMaxRows && row == start && end == start + h) {
      pack_strip6(x + row * ldx, ldx, k, strips + start * k);
    } else {
      for (int64_t kk = 0; kk < k; ++kk) {
        for (int64_t i = row; i < end; ++i) strips[start * k + kk * h + (i - start)] = x[i * ldx + kk];
      }
    }
    row = end;
  }
}

bool PackedLinear::packs_rows(int64_t m) const { return packs(fmt_, m, k_); }

void PackedLinear::run_packed(const float* strips, int64_t m, float* y, int64_t ldy, Act act, int64_t p0, int64_t p1,
                              float* scratch) const {
  const Job j{strips, m, k_, k_, data_.get(), scales_.get(), n_, bias_.get(), y, ldy, act};
  run_packed_job(j, fmt_, std::max<int64_t>(p0, 0), std::min(p1, panels()), scratch);
}

void gemm_f32_panels(const float* x, int64_t m, int64_t k, int64_t ldx, const float* packed, int64_t n,
                     const float* bias, float* y, int64_t ldy, Act act) {
  if (n <= 0) return;
  const Job j{x, m, k, ldx, packed, nullptr, n, bias, y, ldy, act};
  run_job(j, WeightFormat::kF32, 0, (n + kPanel - 1) / kPanel, nullptr);
}

}  // namespace hlm

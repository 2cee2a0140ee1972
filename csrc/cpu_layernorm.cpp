// Fused residual add + LayerNorm on CPU (see cpu_layernorm.h for the why).
#include "cpu_layernorm.h"

#include <cmath>
#include <stdexcept>

#include "avx2_math.h"

namespace hlm {

namespace {

#ifdef HLM_X86
// One row: r = x + res into `r` (may be `out`'s row: r is consumed before out is written), then the two
// moments around the mean (two passes over L1-resident data: no E[x^2] - E[x]^2 cancellation), then the
// affine write. Tails (h % 8) in scalar code.
HLM_AVX2 void row(const float* x, const float* res, const float* w, const float* b, float eps, int64_t h, float* r,
                  float* out) {
  // Four accumulators per reduction: one chain would be bound by the add/FMA latency (48 dependent steps
  // per 384-float row), not by the loads.
  const int64_t h32 = h / 32 * 32, hv = h / 8 * 8;
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  auto sum_into = [&](int64_t j, int u) HLM_AVX2 {
    __m256 v = _mm256_loadu_ps(x + j);
    if (res != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
    _mm256_storeu_ps(r + j, v);
    s[u] = _mm256_add_ps(s[u], v);
  };
  int64_t j = 0;
  for (; j < h32; j += 32) {
    sum_into(j, 0), sum_into(j + 8, 1), sum_into(j + 16, 2), sum_into(j + 24, 3);
  }
  for (; j < hv; j += 8) sum_into(j, 0);
  float tail = 0.f;
  for (; j < h; ++j) {
    const float v = res != nullptr ? x[j] + res[j] : x[j];
    r[j] = v;
    tail += v;
  }
  const float mean = (hsum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))) + tail) /
                     static_cast<float>(h);
  const __m256 m = _mm256_set1_ps(mean);
  __m256 q[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  auto sq_into = [&](int64_t jj, int u) HLM_AVX2 {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(r + jj), m);
    q[u] = _mm256_fmadd_ps(d, d, q[u]);
  };
  for (j = 0; j < h32; j += 32) {
    sq_into(j, 0), sq_into(j + 8, 1), sq_into(j + 16, 2), sq_into(j + 24, 3);
  }
  for (; j < hv; j += 8) sq_into(j, 0);
  tail = 0.f;
  for (; j < h; ++j) tail += (r[j] - mean) * (r[j] - mean);
  const float var = (hsum(_mm256_add_ps(_mm256_add_ps(q[0], q[1]), _mm256_add_ps(q[2], q[3]))) + tail) /
                    static_cast<float>(h);
  const float rstd = 1.f / std::sqrt(var + eps);
  const __m256 rs = _mm256_set1_ps(rstd);
  for (j = 0; j < hv; j += 8) {
    const __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(r + j), m), rs);
    const __m256 bb = b != nullptr ? _mm256_loadu_ps(b + j) : _mm256_setzero_ps();
    _mm256_storeu_ps(out + j, _mm256_fmadd_ps(n, _mm256_loadu_ps(w + j), bb));
  }
  for (; j < h; ++j) out[j] = (r[j] - mean) * rstd * w[j] + (b != nullptr ? b[j] : 0.f);
}

// One RMSNorm row: r = x + res into `r` (may alias res or out), then the mean square and the scaled write.
HLM_AVX2 void rms_row(const float* x, const float* res, const float* w, float eps, int64_t h, float* r, float* out) {
  const int64_t hv = h / 8 * 8;
  __m256 s[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t j = 0;
  for (; j < hv; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    if (res != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
    _mm256_storeu_ps(r + j, v);
    s[(j / 8) & 1] = _mm256_fmadd_ps(v, v, s[(j / 8) & 1]);
  }
  float tail = 0.f;
  for (; j < h; ++j) {
    const float v = res != nullptr ? x[j] + res[j] : x[j];
    r[j] = v;
    tail += v * v;
  }
  const float ms = (hsum(_mm256_add_ps(s[0], s[1])) + tail) / static_cast<float>(h);
  const float rstd = 1.f / std::sqrt(ms + eps);
  const __m256 rs = _mm256_set1_ps(rstd);
  for (j = 0; j < hv; j += 8) {
    _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(r + j), rs), _mm256_loadu_ps(w + j)));
  }
  for (; j < h; ++j) out[j] = r[j] * rstd * w[j];
}
#endif

}  // namespace

void add_rmsnorm(const float* x, int64_t ldx, const float* residual, int64_t ldres, const float* weight, float eps,
                 int64_t rows, int64_t h, float* out, int64_t ldout, float* r_out, int64_t ldr) {
  if (rows < 0 || h < 1) throw std::invalid_argument("add_rmsnorm: need rows >= 0 and a hidden size >= 1");
  if (!cpu_has_avx2_fma()) throw std::runtime_error("add_rmsnorm: this CPU lacks AVX2 + FMA");
#ifdef HLM_X86
  for (int64_t i = 0; i < rows; ++i) {
    float* r = r_out != nullptr ? r_out + i * ldr : out + i * ldout;
    rms_row(x + i * ldx, residual != nullptr ? residual + i * ldres : nullptr, weight, eps, h, r, out + i * ldout);
  }
#else
  (void)x, (void)ldx, (void)residual, (void)ldres, (void)weight, (void)eps, (void)out, (void)ldout, (void)r_out,
      (void)ldr;
#endif
}

void add_layernorm(const float* x, int64_t ldx, const float* residual, int64_t ldres, const float* weight,
                   const float* bias, float eps, int64_t rows, int64_t h, float* out, int64_t ldout, float* r_out,
                   int64_t ldr) {
  if (rows < 0 || h < 1) throw std::invalid_argument("add_layernorm: need rows >= 0 and a hidden size >= 1");
  if (!cpu_has_avx2_fma()) throw std::runtime_error("add_layernorm: this CPU lacks AVX2 + FMA");
#ifdef HLM_X86
  for (int64_t i = 0; i < rows; ++i) {
    // Without r_out the sum goes to out's row and is normalised in place there.
    float* r = r_out != nullptr ? r_out + i * ldr : out + i * ldout;
    row(x + i * ldx, residual != nullptr ? residual + i * ldres : nullptr, weight, bias, eps, h, r, out + i * ldout);
  }
#else
  (void)x, (void)ldx, (void)residual, (void)ldres, (void)weight, (void)bias, (void)eps, (void)out, (void)ldout,
      (void)r_out, (void)ldr;
#endif
}

}  // namespace hlm

// The fp32 small-M GEMM's raw-buffer API (small_gemm.h) over the packed-panel kernel (packed_gemm.cpp).
#include "small_gemm.h"

#include <cstring>

#include "avx2_math.h"

namespace hlm {

namespace {

#ifdef HLM_X86
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
#endif

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
  gemm_f32_panels(x, m, k, ldx, packed, n, bias, y, ldy, act_gelu ? Act::kGelu : Act::kNone);
}

}  // namespace hlm

// Vector math shared by the CPU kernels (packed_gemm.cpp, int8_gemm.cpp, cpu_attention.cpp, native_forward.cpp):
// AVX2/FMA code selected per function by target attributes, so the translation units build for the baseline ISA
// and the callers choose at run time (`__builtin_cpu_supports`).
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#define HLM_X86 1
#endif

namespace hlm {

// True when the running CPU has AVX2 + FMA: every kernel's only vector code path (callers fall back otherwise).
inline bool cpu_has_avx2_fma() {
#ifdef HLM_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace hlm

#ifdef HLM_X86
#include <immintrin.h>
#define HLM_AVX2 __attribute__((target("avx2,fma")))

namespace hlm {

// exp(x) for x <= 0 (all GELU's erf and a max-subtracted softmax need): Cody-Waite range reduction + a
// degree-5 polynomial (Cephes expf; relative error ~1e-7). Below -87.3 it returns 0, as expf underflows.
HLM_AVX2 inline __m256 exp_neg(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

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

// SiLU, x * sigmoid(x) (Qwen3's SwiGLU gate). exp_neg only takes x <= 0, so e = exp(-|x|) and
// sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below: no overflow at either end.
HLM_AVX2 inline __m256 silu(__m256 x) {
  const __m256 e = exp_neg(_mm256_or_ps(x, _mm256_set1_ps(-0.f)));  // -|x|
  const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_add_ps(_mm256_set1_ps(1.f), e));
  const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_mul_ps(x, _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), neg));
}

// Horizontal sum / max of the 8 lanes.
// The epilogue of a 16-column output tile row (packed_gemm.cpp, int8_gemm.cpp): GELU when asked, on registers
// (no second pass over y), then the row's ncols <= 16 columns; a partial (zero-padded) last panel stores only
// its real columns.
HLM_AVX2 inline void store_row16(float* y, __m256 v0, __m256 v1, bool apply_gelu, int ncols) {
  if (apply_gelu) {
    v0 = gelu(v0);
    v1 = gelu(v1);
  }
  if (ncols == 16) {
    _mm256_storeu_ps(y, v0);
    _mm256_storeu_ps(y + 8, v1);
    return;
  }
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, v0);
  _mm256_store_ps(tmp + 8, v1);
  __builtin_memcpy(y, tmp, ncols * sizeof(float));
}

HLM_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HLM_AVX2 inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace hlm
#endif

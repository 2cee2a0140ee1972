// Multiply-add rate of this core's three GEMM arithmetics, register-only (no loads: the roof each kernel aims at):
//   fp32 FMA (packed_gemm.cpp), int16 vpmaddwd + vpaddd (int8_gemm.cpp: int8 weights x int16 activations),
//   u8 x s8 vpmaddubsw + vpmaddwd + vpaddd (ONNX Runtime's AVX2 dynamic int8: 7-bit operands, since AVX2
//   saturates vpmaddubsw's int16 pair sums and has no VNNI).
// Why: it says how far an int8 kernel could go past ours by changing arithmetic, before any memory effect.
//   gcc -O2 -mavx2 -mfma bench/kernels/madd_rate.c -o /tmp/madd_rate && /tmp/madd_rate
// `madd_rate fp32` prints only the best of 3 fp32 runs as GFLOP/s (one number): bench/test_onnx_peer.py's FMA roof,
// one copy per core it measures on.
// Measured on the dev box (EPYC Zen 3, one core, 5 runs): fp32 45-50 G MAC/s (2 FMAs a cycle), int16 54-74,
// u8 x s8 66-70: ORT's arithmetic buys at most ~1.2x ours here, at 7-bit operands.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define N 100000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Each loop: 8-12 independent accumulator chains (enough to cover the latencies), distinct operands, and one
// empty asm per step that makes every accumulator and operand opaque (no hoisting, no merged chains).
__attribute__((noinline)) static float fma_rate(float seed) {
  __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-4f);
  __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_add_ps(c0, b), c2 = _mm256_add_ps(c1, b), c3 = _mm256_add_ps(c2, b);
  __m256 c4 = _mm256_add_ps(c3, b), c5 = _mm256_add_ps(c4, b), c6 = _mm256_add_ps(c5, b), c7 = _mm256_add_ps(c6, b);
  __m256 c8 = _mm256_add_ps(c7, b), c9 = _mm256_add_ps(c8, b), c10 = _mm256_add_ps(c9, b), c11 = _mm256_add_ps(c10, b);
  for (long i = 0; i < N; ++i) {
    c0 = _mm256_fmadd_ps(a, c0, b), c1 = _mm256_fmadd_ps(a, c1, b), c2 = _mm256_fmadd_ps(a, c2, b);
    c3 = _mm256_fmadd_ps(a, c3, b), c4 = _mm256_fmadd_ps(a, c4, b), c5 = _mm256_fmadd_ps(a, c5, b);
    c6 = _mm256_fmadd_ps(a, c6, b), c7 = _mm256_fmadd_ps(a, c7, b), c8 = _mm256_fmadd_ps(a, c8, b);
    c9 = _mm256_fmadd_ps(a, c9, b), c10 = _mm256_fmadd_ps(a, c10, b), c11 = _mm256_fmadd_ps(a, c11, b);
    __asm__ volatile("" : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5), "+x"(c6), "+x"(c7), "+x"(c8),
                     "+x"(c9), "+x"(c10), "+x"(c11));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
  return _mm256_cvtss_f32(s);
}

// One step: 8 chains of product + accumulate. MADD: vpmaddwd (16 MACs); U8S8: vpmaddubsw + vpmaddwd by 1 (32).
#define STEP(OP)                                                                                                      \
  c0 = _mm256_add_epi32(c0, OP(x0, y0)), c1 = _mm256_add_epi32(c1, OP(x0, y1));                                      \
  c2 = _mm256_add_epi32(c2, OP(x1, y0)), c3 = _mm256_add_epi32(c3, OP(x1, y1));                                      \
  c4 = _mm256_add_epi32(c4, OP(x2, y0)), c5 = _mm256_add_epi32(c5, OP(x2, y1));                                      \
  c6 = _mm256_add_epi32(c6, OP(x3, y0)), c7 = _mm256_add_epi32(c7, OP(x3, y1));                                      \
  __asm__ volatile("" : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5), "+x"(c6), "+x"(c7));            \
  __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(y0), "+x"(y1))
#define MADD(x, y) _mm256_madd_epi16(x, y)
#define U8S8(x, y) _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), one)

#define INT_LOOP(OP)                                                                                                  \
  __m256i x0 = _mm256_set1_epi16((short)seed), x1 = _mm256_set1_epi16(7), x2 = _mm256_set1_epi16(11);                \
  __m256i x3 = _mm256_set1_epi16(13), y0 = _mm256_set1_epi16(5), y1 = _mm256_set1_epi16(9);                          \
  __m256i one = _mm256_set1_epi16(1), c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;     \
  __m256i c6 = c0, c7 = c0;                                                                                           \
  (void)one;                                                                                                          \
  for (long i = 0; i < N; ++i) {                                                                                      \
    STEP(OP);                                                                                                         \
  }                                                                                                                   \
  c0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),                        \
                        _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));                        \
  return _mm256_cvtsi256_si32(c0)

__attribute__((noinline)) static int int16_rate(int seed) { INT_LOOP(MADD); }
__attribute__((noinline)) static int u8s8_rate(int seed) { INT_LOOP(U8S8); }

int main(int argc, char** argv) {
  if (argc > 1 && argv[1][0] == 'f') {  // "fp32": the FMA roof alone, in GFLOP/s (2 per multiply-add)
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      double t = now();
      float f = fma_rate(0.5f + rep);
      double r = 2 * 12.0 * 8 * N / (now() - t) / 1e9;
      best = r > best && f == f ? r : best;  // (f == f: the sum is used, the loop is kept)
    }
    printf("%.2f\n", best);
    return 0;
  }
  for (int rep = 0; rep < 2; ++rep) {
    double t = now();
    float f = fma_rate(0.5f);
    printf("fp32 FMA            %6.1f G MAC/s\n", 12.0 * 8 * N / (now() - t) / 1e9);
    t = now();
    int a = int16_rate(3);
    printf("int16 vpmaddwd      %6.1f G MAC/s\n", 8.0 * 16 * N / (now() - t) / 1e9);
    t = now();
    int b = u8s8_rate(3);
    printf("u8 x s8 vpmaddubsw  %6.1f G MAC/s   (checksums %g %d %d)\n", 8.0 * 32 * N / (now() - t) / 1e9, f, a, b);
  }
  return 0;
}

// The AVX2+FMA GEMV row kernel shared by every dense weight type (f32, bf16, f16): only the
// load of 8 weights (and of 1 in the tails) differs, so all types sum in the same order and a
// bf16 weight gives bit for bit the result of its f32 widening. Include only from *_avx2.cpp.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace ao::kernels::cpu::detail {

inline float hsum_avx2(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// Dot product of one weight row with x: two accumulators over 16, then 8, then scalars.
template <typename E, typename Load8, typename Load1>
float dot_row_avx2(const E* w, const float* x, int64_t n, Load8 load8, Load1 load1) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), s0);
    s1 = _mm256_fmadd_ps(load8(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), s0);
  float s = hsum_avx2(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += load1(w[i]) * x[i];
  return s;
}

// y[n] = W[n, :] . x for n in [n0, n1). Four rows at a time share each load of x; two
// accumulators per row hide FMA latency.
template <typename E, typename Load8, typename Load1>
void gemv_rows_avx2_impl(const E* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K,
                         Load8 load8, Load1 load1) {
  const int64_t K16 = K & ~int64_t(15);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const E* w0 = W + n * K;
    const E* w1 = w0 + K;
    const E* w2 = w1 + K;
    const E* w3 = w2 + K;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) {
      const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
      a0 = _mm256_fmadd_ps(load8(w0 + k), xa, a0);
      a1 = _mm256_fmadd_ps(load8(w1 + k), xa, a1);
      a2 = _mm256_fmadd_ps(load8(w2 + k), xa, a2);
      a3 = _mm256_fmadd_ps(load8(w3 + k), xa, a3);
      b0 = _mm256_fmadd_ps(load8(w0 + k + 8), xb, b0);
      b1 = _mm256_fmadd_ps(load8(w1 + k + 8), xb, b1);
      b2 = _mm256_fmadd_ps(load8(w2 + k + 8), xb, b2);
      b3 = _mm256_fmadd_ps(load8(w3 + k + 8), xb, b3);
    }
    float s0 = hsum_avx2(_mm256_add_ps(a0, b0)), s1 = hsum_avx2(_mm256_add_ps(a1, b1)),
          s2 = hsum_avx2(_mm256_add_ps(a2, b2)), s3 = hsum_avx2(_mm256_add_ps(a3, b3));
    for (int64_t k = K16; k < K; ++k) {
      s0 += load1(w0[k]) * x[k];
      s1 += load1(w1[k]) * x[k];
      s2 += load1(w2[k]) * x[k];
      s3 += load1(w3[k]) * x[k];
    }
    y[n] = s0, y[n + 1] = s1, y[n + 2] = s2, y[n + 3] = s3;
  }
  for (; n < n1; ++n) y[n] = dot_row_avx2(W + n * K, x, K, load8, load1);
}

}  // namespace ao::kernels::cpu::detail

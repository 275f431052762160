#include <immintrin.h>

#include <cmath>

#include "formats/bulk.h"
#include "formats/math_util.h"

namespace ao::formats::detail {

void div_scalar_avx2(const float* x, float s, float* out, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vs));
  for (; i < n; ++i) out[i] = x[i] / s;
}

void mul_scalar_avx2(const float* x, float s, float* out, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
  for (; i < n; ++i) out[i] = x[i] * s;
}

void min_max_avx2(const float* x, int64_t n, float* mn, float* mx) {
  __m256 lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
  __m256 nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  float a = *mn, b = *mx;
  if (_mm256_movemask_ps(nan) != 0) a = b = NAN;
  for (int k = 0; k < 8; ++k) {
    a = nan_min(a, l[k]);
    b = nan_max(b, h[k]);
  }
  for (; i < n; ++i) {
    a = nan_min(a, x[i]);
    b = nan_max(b, x[i]);
  }
  *mn = a;
  *mx = b;
}

float abs_max_avx2(const float* x, int64_t n, float acc) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps();
  __m256 nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  if (_mm256_movemask_ps(nan) != 0) acc = NAN;
  for (float l : lanes) acc = nan_max(acc, l);
  for (; i < n; ++i) acc = nan_max(acc, std::fabs(x[i]));
  return acc;
}

}  // namespace ao::formats::detail

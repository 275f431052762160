// AVX2+FMA (+F16C) bodies of the bf16/f16-weight GEMV and widening.
#include <immintrin.h>

#include "ao/core/dtype.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu::detail {
namespace {

inline __m256 load8(const uint16_t* p, HalfType t) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == HalfType::bf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline float widen1(uint16_t v, HalfType t) {
  return t == HalfType::bf16 ? bf16_to_f32(v) : f16_to_f32(v);
}

template <HalfType T>
void rows(const uint16_t* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K) {
  const int64_t K16 = K & ~int64_t(15);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const uint16_t* w0 = W + n * K;
    const uint16_t* w1 = w0 + K;
    const uint16_t* w2 = w1 + K;
    const uint16_t* w3 = w2 + K;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(),
           b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    for (int64_t k = 0; k < K16; k += 16) {
      const __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
      a0 = _mm256_fmadd_ps(load8(w0 + k, T), xa, a0);
      a1 = _mm256_fmadd_ps(load8(w1 + k, T), xa, a1);
      a2 = _mm256_fmadd_ps(load8(w2 + k, T), xa, a2);
      a3 = _mm256_fmadd_ps(load8(w3 + k, T), xa, a3);
      b0 = _mm256_fmadd_ps(load8(w0 + k + 8, T), xb, b0);
      b1 = _mm256_fmadd_ps(load8(w1 + k + 8, T), xb, b1);
      b2 = _mm256_fmadd_ps(load8(w2 + k + 8, T), xb, b2);
      b3 = _mm256_fmadd_ps(load8(w3 + k + 8, T), xb, b3);
    }
    float s0 = hsum(_mm256_add_ps(a0, b0)), s1 = hsum(_mm256_add_ps(a1, b1)),
          s2 = hsum(_mm256_add_ps(a2, b2)), s3 = hsum(_mm256_add_ps(a3, b3));
    for (int64_t k = K16; k < K; ++k) {
      s0 += widen1(w0[k], T) * x[k];
      s1 += widen1(w1[k], T) * x[k];
      s2 += widen1(w2[k], T) * x[k];
      s3 += widen1(w3[k], T) * x[k];
    }
    y[n] = s0, y[n + 1] = s1, y[n + 2] = s2, y[n + 3] = s3;
  }
  for (; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    __m256 a = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(load8(w + k, T), _mm256_loadu_ps(x + k), a);
    float s = hsum(a);
    for (; k < K; ++k) s += widen1(w[k], T) * x[k];
    y[n] = s;
  }
}

}  // namespace

void gemv_rows_half_avx2(const uint16_t* W, HalfType t, const float* x, float* y, int64_t n0,
                         int64_t n1, int64_t K) {
  if (t == HalfType::bf16)
    rows<HalfType::bf16>(W, x, y, n0, n1, K);
  else
    rows<HalfType::f16>(W, x, y, n0, n1, K);
}

void widen_half_avx2(const uint16_t* src, HalfType t, float* dst, int64_t n) {
  int64_t i = 0;
  if (t == HalfType::bf16)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src + i, HalfType::bf16));
  else
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src + i, HalfType::f16));
  for (; i < n; ++i) dst[i] = widen1(src[i], t);
}

}  // namespace ao::kernels::cpu::detail

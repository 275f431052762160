// AVX2+FMA (+F16C) bodies of the bf16/f16-weight GEMV and widening.
#include <immintrin.h>

#include "ao/core/dtype.h"
#include "kernels/cpu/gemv_rows_avx2.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu::detail {
namespace {

inline __m256 load8(const uint16_t* p, HalfType t) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == HalfType::bf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

inline float widen1(uint16_t v, HalfType t) {
  return t == HalfType::bf16 ? bf16_to_f32(v) : f16_to_f32(v);
}

template <HalfType T>
void rows(const uint16_t* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K) {
  gemv_rows_avx2_impl(
      W, x, y, n0, n1, K, [](const uint16_t* p) { return load8(p, T); },
      [](uint16_t v) { return widen1(v, T); });
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

// AVX2 affine quantize/dequantize segments; bit-identical to the scalar reference in
// affine_kernels.cpp (same operation order, same per-op rounding to bf16 when asked).
#include <immintrin.h>

#include "formats/math_util.h"
#include "formats/simd_avx2.h"

namespace ao::formats::detail {

void quantize_affine_segment_avx2(const AffineSegment& s, const float* x, int64_t len, uint8_t* q) {
  const __m256 inv = _mm256_set1_ps(s.inv_scale), zp = _mm256_set1_ps(s.zp);
  const __m256 lo = _mm256_set1_ps(s.qmin), hi = _mm256_set1_ps(s.qmax);
  int64_t j = 0;
  for (; j + 8 <= len; j += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), inv);
    if (s.bf16) v = round_bf16_avx2(v);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (s.has_zp) {
      v = _mm256_add_ps(v, zp);
      if (s.bf16) v = round_bf16_avx2(v);
    }
    const __m256 ordered = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256i iv = _mm256_and_si256(_mm256_cvtps_epi32(v), _mm256_castps_si256(ordered));
    store_i32_as_bytes(iv, q + j);
  }
  if (j < len) quantize_affine_segment_ref(s, x + j, len - j, q + j);
}

void dequantize_affine_segment_avx2(const uint8_t* q, bool is_signed, float zp, float scale,
                                    int64_t len, float* out) {
  const __m256 vz = _mm256_set1_ps(zp), vs = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j));
    const __m256i iv = is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
    const __m256 v = _mm256_sub_ps(_mm256_cvtepi32_ps(iv), vz);
    _mm256_storeu_ps(out + j, _mm256_mul_ps(v, vs));
  }
  if (j < len) dequantize_affine_segment_ref(q + j, is_signed, zp, scale, len - j, out + j);
}

}  // namespace ao::formats::detail

// Private AVX2 helpers; include only from *_avx2.cpp files.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace ao::formats::detail {

// PyTorch's float -> bf16 -> float rounding (RNE, NaN -> 0x7FC0), 8 lanes.
inline __m256 round_bf16_avx2(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
  r = _mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u)));
  const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_castsi256_ps(r),
                          _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)), is_nan);
}

// Stores the low byte of each of 8 int32 lanes (any values; truncated mod 256).
inline void store_i32_as_bytes(__m256i v, uint8_t* dst) {
  const __m256i m = _mm256_and_si256(v, _mm256_set1_epi32(0xFF));
  const __m128i lo = _mm256_castsi256_si128(m);
  const __m128i hi = _mm256_extracti128_si256(m, 1);
  const __m128i w = _mm_packus_epi32(lo, hi);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
}

// bf16 -> f32 for 8 values.
inline __m256 load_bf16_avx2(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

}  // namespace ao::formats::detail

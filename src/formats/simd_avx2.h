// Private AVX2 helpers; include only from *_avx2.cpp files.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "formats/float_codec.h"

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

// encode_with() for 8 lanes: returns one code per int32 lane (sign included).
inline __m256i encode8(const EncodeParams& p, __m256 xf, bool saturate) {
  if (saturate) {
    const __m256 m = _mm256_set1_ps(p.max_value);
    // min/max return the second operand when either is NaN: keep x second to keep NaN.
    xf = _mm256_min_ps(m, xf);
    xf = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), m), xf);
  }
  const __m256i u0 = _mm256_castps_si256(xf);
  const __m256i sign = _mm256_and_si256(u0, _mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256i a = _mm256_xor_si256(u0, sign);  // |x| bits, as non-negative int32
  const __m256i is_nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000));
  const __m256i ge_sat = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(static_cast<int>(p.sat_bits - 1)));
  const __m256i lt_den = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(p.denorm_bits)), a);
  // denormal branch
  const __m256 dmask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(p.denorm_mask)));
  const __m256i den =
      _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), dmask)),
                       _mm256_set1_epi32(static_cast<int>(p.denorm_mask)));
  // normal branch
  const __m128i sh = _mm_cvtsi32_si128(p.shift);
  const __m256i odd = _mm256_and_si256(_mm256_sra_epi32(a, sh), _mm256_set1_epi32(1));
  __m256i nor = _mm256_add_epi32(a, _mm256_set1_epi32(p.normal_add));
  nor = _mm256_add_epi32(nor, odd);
  nor = _mm256_sra_epi32(nor, sh);
  // combine
  __m256i r = _mm256_blendv_epi8(nor, den, lt_den);
  const __m256i sat_sel = _mm256_andnot_si256(is_nan, ge_sat);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(static_cast<int>(p.sat_code)), sat_sel);
  if (p.nan_to_code)
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(static_cast<int>(p.nan_code)), is_nan);
  r = _mm256_and_si256(r, _mm256_set1_epi32(0xFF));
  const __m256i s = _mm256_and_si256(_mm256_srl_epi32(sign, _mm_cvtsi32_si128(p.sign_shift)),
                                     _mm256_set1_epi32(static_cast<int>(p.sign_mask)));
  return _mm256_or_si256(r, s);
}

}  // namespace ao::formats::detail

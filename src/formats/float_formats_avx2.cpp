// AVX2 versions of the element encoders/decoders: the same integer plan as encode_with()
// in float_codec.h, eight lanes at a time. Compiled with -mavx2 -mfma -mf16c; only called
// after formats_use_avx2() said yes.
#include <immintrin.h>

#include "formats/float_codec.h"
#include "formats/simd_avx2.h"

namespace ao::formats::detail {
namespace {

// Packs the low bytes of 8 int32 lanes (values already in [0, 255]) into 8 bytes.
inline void store_low_bytes(__m256i v, uint8_t* dst) {
  const __m128i lo = _mm256_castsi256_si128(v);
  const __m128i hi = _mm256_extracti128_si256(v, 1);
  const __m128i w = _mm_packus_epi32(lo, hi);  // 8 x u16
  const __m128i b = _mm_packus_epi16(w, w);    // 16 x u8, first 8 valid
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b);
}

}  // namespace

void encode_avx2(const EncodeParams& p, const float* x, uint8_t* codes, int64_t n, bool saturate) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store_low_bytes(encode8(p, _mm256_loadu_ps(x + i), saturate), codes + i);
  for (; i < n; ++i) codes[i] = encode_with(p, saturate ? clamp_keep_nan(x[i], p.max_value) : x[i]);
}

void encode_e8m0_avx2(const float* x, uint8_t* codes, int64_t n) {
  int64_t i = 0;
  const __m256i ff = _mm256_set1_epi32(0xFF);
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_castps_si256(_mm256_loadu_ps(x + i));
    const __m256i e = _mm256_and_si256(_mm256_srli_epi32(b, 23), ff);
    const __m256i g = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x400000)),
                                         _mm256_set1_epi32(0x400000));
    const __m256i rs_zero =
        _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x3FFFFF)), _mm256_setzero_si256());
    const __m256i lsb_zero = _mm256_cmpeq_epi32(e, _mm256_setzero_si256());
    // round up when g && (rs || lsb) == g && !(rs_zero && lsb_zero)
    const __m256i up = _mm256_andnot_si256(_mm256_and_si256(rs_zero, lsb_zero), g);
    __m256i r = _mm256_sub_epi32(e, up);  // up lanes are -1
    r = _mm256_blendv_epi8(r, ff, _mm256_cmpeq_epi32(e, ff));
    store_low_bytes(_mm256_and_si256(r, ff), codes + i);
  }
  for (; i < n; ++i) codes[i] = e8m0_encode(x[i]);
}

void decode_lut_avx2(const float* table, const uint8_t* codes, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i idx =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    _mm256_storeu_ps(out + i, _mm256_i32gather_ps(table, idx, 4));
  }
  for (; i < n; ++i) out[i] = table[codes[i]];
}

}  // namespace ao::formats::detail

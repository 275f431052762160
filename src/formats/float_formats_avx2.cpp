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
  for (; i + 8 <= n; i += 8)
    store_low_bytes(encode8(p, _mm256_loadu_ps(x + i), saturate), codes + i);
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
    const __m256i rs_zero = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x3FFFFF)),
                                               _mm256_setzero_si256());
    const __m256i lsb_zero = _mm256_cmpeq_epi32(e, _mm256_setzero_si256());
    // round up when g && (rs || lsb) == g && !(rs_zero && lsb_zero)
    const __m256i up = _mm256_andnot_si256(_mm256_and_si256(rs_zero, lsb_zero), g);
    __m256i r = _mm256_sub_epi32(e, up);  // up lanes are -1
    r = _mm256_blendv_epi8(r, ff, _mm256_cmpeq_epi32(e, ff));
    store_low_bytes(_mm256_and_si256(r, ff), codes + i);
  }
  for (; i < n; ++i) codes[i] = e8m0_encode(x[i]);
}

}  // namespace ao::formats::detail

namespace ao::formats::detail {

// Decoding without a table: place the code's exponent+mantissa at the top of an f32
// mantissa/exponent field and multiply by 2^(127 - bias) (exact: a power of two, and
// subnormal codes land on f32 subnormals that the multiply normalizes). Specials blended.
void decode_arith_avx2(FloatFormat f, const uint8_t* codes, float* out, int64_t n) {
  const float* table = decode_table(f);
  const FloatFormatInfo& info = float_format_info(f);
  const int width = info.bits - 1;  // bits below the sign
  const __m256i pos_mask = _mm256_set1_epi32((1 << width) - 1);
  const __m256i sign_bit = _mm256_set1_epi32(1 << width);
  const __m128i mshift = _mm_cvtsi32_si128(23 - info.mbits);
  const __m128i sshift = _mm_cvtsi32_si128(31 - width);
  const __m256 pow2 = _mm256_castsi256_ps(_mm256_set1_epi32((254 - info.exp_bias) << 23));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i c =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    const __m256i pos = _mm256_and_si256(c, pos_mask);
    __m256 v = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_sll_epi32(pos, mshift)), pow2);
    __m256i r = _mm256_castps_si256(v);
    if (f == FloatFormat::f8_e4m3fn) {
      r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FF00000), _mm256_cmpeq_epi32(pos, pos_mask));
    } else if (f == FloatFormat::f8_e5m2) {
      const __m256i m = _mm256_and_si256(pos, _mm256_set1_epi32(3));
      const __m256i special = _mm256_cmpgt_epi32(pos, _mm256_set1_epi32(0x7B));
      const __m256i nan_bits =
          _mm256_or_si256(_mm256_set1_epi32(0x7FC00000), _mm256_slli_epi32(m, 21));
      const __m256i sv = _mm256_blendv_epi8(nan_bits, _mm256_set1_epi32(0x7F800000),
                                            _mm256_cmpeq_epi32(m, _mm256_setzero_si256()));
      r = _mm256_blendv_epi8(r, sv, special);
    }
    r = _mm256_or_si256(r, _mm256_sll_epi32(_mm256_and_si256(c, sign_bit), sshift));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(r));
  }
  for (; i < n; ++i) out[i] = table[codes[i]];
}

void decode_e8m0_avx2(const uint8_t* codes, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i c =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    __m256i r = _mm256_slli_epi32(c, 23);
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x00400000),
                           _mm256_cmpeq_epi32(c, _mm256_setzero_si256()));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7F800001),
                           _mm256_cmpeq_epi32(c, _mm256_set1_epi32(255)));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(r));
  }
  for (; i < n; ++i) out[i] = e8m0_to_f32(codes[i]);
}

}  // namespace ao::formats::detail

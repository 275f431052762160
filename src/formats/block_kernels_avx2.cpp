// Fused AVX2 block quantization: amax, scale and encode of each block while it is in
// registers. Same operations as quantize_blocks_row_ref (mx.cpp), lane by lane.
#include <immintrin.h>

#include <cmath>

#include "formats/block_kernels.h"
#include "formats/math_util.h"
#include "formats/simd_avx2.h"

namespace ao::formats::detail {

void quantize_blocks_row_avx2(const BlockRule& rule, const float* row, int64_t k, int64_t bs,
                              uint8_t* codes, uint8_t* scales) {
  if (bs % 8 != 0) return quantize_blocks_row_ref(rule, row, k, bs, codes, scales);
  const EncodeParams& p = encode_params(rule.elem);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  for (int64_t b = 0; b < k / bs; ++b) {
    const float* blk = row + b * bs;
    __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int64_t i = 0; i < bs; i += 8) {
      const __m256 v = _mm256_and_ps(_mm256_loadu_ps(blk + i), absmask);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      m = _mm256_max_ps(m, v);
    }
    float amax;
    if (_mm256_movemask_ps(nan) != 0) {
      amax = NAN;
    } else {
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
      amax = _mm_cvtss_f32(h);
    }
    const BlockScaling sc = block_scaling(rule, amax);
    scales[b] = sc.scale_byte;
    const __m256 vs = _mm256_set1_ps(sc.value);
    const bool nan_scale = sc.value != sc.value;  // a NaN scalar wins (see bulk.cpp)
    for (int64_t i = 0; i < bs; i += 8) {
      __m256 v = _mm256_loadu_ps(blk + i);
      v = nan_scale ? vs : (sc.divide ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vs));
      store_i32_as_bytes(encode8(p, v, /*saturate=*/true), codes + b * bs + i);
    }
  }
}

}  // namespace ao::formats::detail

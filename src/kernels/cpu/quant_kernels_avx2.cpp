// AVX2 + FMA versions of the quantized GEMV kernels (compiled with -mavx2 -mfma -mf16c).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemv_rows_avx2.h"
#include "kernels/cpu/quant_kernels.h"

namespace ao::kernels::cpu::quant::avx2 {
namespace {

using ::ao::kernels::cpu::detail::hsum_avx2;
inline float hsum(__m256 v) { return hsum_avx2(v); }

// sum_k x[k] * q[k] over n elements, and sum_k x[k].
inline void dot_int8(const float* x, const int8_t* q, int64_t n, float* dot, float* xsum) {
  __m256 acc = _mm256_setzero_ps(), xs = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256i qi =
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k)));
    const __m256 xv = _mm256_loadu_ps(x + k);
    acc = _mm256_fmadd_ps(xv, _mm256_cvtepi32_ps(qi), acc);
    xs = _mm256_add_ps(xs, xv);
  }
  float d = hsum(acc), s = hsum(xs);
  for (; k < n; ++k) {
    d += x[k] * static_cast<float>(q[k]);
    s += x[k];
  }
  *dot = d;
  *xsum = s;
}

}  // namespace

float dot_f32(const float* a, const float* b, int64_t n) {
  return detail::dot_row_avx2(
      a, b, n, [](const float* p) { return _mm256_loadu_ps(p); }, [](float v) { return v; });
}

void gemv_affine_int8(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                      float* y, int64_t ldy) {
  const int64_t groups = w.K / w.group;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* q = w.q + n * w.K;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * w.K;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        float dot, xs;
        dot_int8(xm + g * w.group, q + g * w.group, w.group, &dot, &xs);
        const float zp = w.zero_point ? static_cast<float>(w.zero_point[n * groups + g]) : 0.0f;
        acc += (dot - zp * xs) * w.scale[n * groups + g];
      }
      y[m * ldy + (n - n0)] = acc;
    }
  }
}

void gemv_int4_plain(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                     float* y, int64_t ldy) {
  // De-interleave x into even / odd halves once so that low and high nibbles multiply
  // contiguous vectors.
  // The last group may be partial (K % group != 0; K and group even).
  const int64_t half = w.K / 2, ghalf = w.group / 2, groups = (w.K + w.group - 1) / w.group;
  std::vector<float> xe(static_cast<size_t>(M * half)), xo(static_cast<size_t>(M * half)),
      xsum(static_cast<size_t>(M * groups));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t i = 0; i < half; ++i) {
      xe[m * half + i] = x[m * w.K + 2 * i];
      xo[m * half + i] = x[m * w.K + 2 * i + 1];
    }
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t k = g * w.group; k < std::min((g + 1) * w.group, w.K); ++k) s += x[m * w.K + k];
      xsum[m * groups + g] = s;
    }
  }
  const __m256i mask = _mm256_set1_epi32(0xF), eight = _mm256_set1_epi32(8);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = w.q + n * half;
    for (int64_t m = 0; m < M; ++m) {
      const float* e = xe.data() + m * half;
      const float* o = xo.data() + m * half;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        __m256 a = _mm256_setzero_ps();
        int64_t i = g * ghalf;
        const int64_t end = std::min((g + 1) * ghalf, half);
        for (; i + 8 <= end; i += 8) {
          const __m256i b =
              _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
          const __m256i lo =
              _mm256_sub_epi32(_mm256_xor_si256(_mm256_and_si256(b, mask), eight), eight);
          const __m256i hi =
              _mm256_sub_epi32(_mm256_xor_si256(_mm256_srli_epi32(b, 4), eight), eight);
          a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_loadu_ps(e + i), a);
          a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_loadu_ps(o + i), a);
        }
        float dot = hsum(a);
        for (; i < end; ++i) {
          dot += static_cast<float>(((q[i] & 0xF) ^ 8) - 8) * e[i];
          dot += static_cast<float>(((q[i] >> 4) ^ 8) - 8) * o[i];
        }
        acc += dot * w.scale[g * w.N + n] + xsum[m * groups + g] * w.zero[g * w.N + n];
      }
      y[m * ldy + (n - n0)] = acc;
    }
  }
}

// Integer dot products: int8 weights widened to int16 (minus their zero point) times the int16
// activations with _mm256_madd_epi16 (pairs of int16 products summed into int32: exact, no
// saturation, unlike maddubs with [-128, 127] operands). 16 MACs per instruction.
void gemm_int8_int8(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale, int64_t M,
                    int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t groups = w.K / w.group;
  if (groups > 1 && w.group % 16 == 0) {
    // Small groups (8da4w): scale each group's 8 int32 lanes in float and reduce once per
    // output, instead of a horizontal integer sum per group (same value up to f32 rounding).
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* q = w.q + n * w.K;
      for (int64_t m = 0; m < M; ++m) {
        const int16_t* xm = xq + m * w.K;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t g = 0; g < groups; ++g) {
          const int32_t zp = w.zero_point ? w.zero_point[n * groups + g] : 0;
          const __m256i zv = _mm256_set1_epi16(static_cast<int16_t>(zp));
          __m256i a = _mm256_setzero_si256();
          for (int64_t k = g * w.group; k < (g + 1) * w.group; k += 16) {
            const __m256i wv = _mm256_sub_epi16(
                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k))), zv);
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + k));
            a = _mm256_add_epi32(a, _mm256_madd_epi16(xv, wv));
          }
          acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a),
                                _mm256_set1_ps(x_scale[m] * w.scale[n * groups + g]), acc);
        }
        y[m * ldy + (n - n0)] = hsum(acc);
      }
    }
    return;
  }
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* q = w.q + n * w.K;
    for (int64_t m = 0; m < M; ++m) {
      const int16_t* xm = xq + m * w.K;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t zp = w.zero_point ? w.zero_point[n * groups + g] : 0;
        const __m256i zv = _mm256_set1_epi16(static_cast<int16_t>(zp));
        __m256i a = _mm256_setzero_si256();
        int64_t k = g * w.group;
        const int64_t end = (g + 1) * w.group;
        for (; k + 16 <= end; k += 16) {
          const __m256i wv = _mm256_sub_epi16(
              _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k))), zv);
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + k));
          a = _mm256_add_epi32(a, _mm256_madd_epi16(xv, wv));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        int32_t dot = _mm_cvtsi128_si32(s);
        for (; k < end; ++k) dot += static_cast<int32_t>(xm[k]) * (q[k] - zp);
        acc += (static_cast<float>(dot) * x_scale[m]) * w.scale[n * groups + g];
      }
      y[m * ldy + (n - n0)] = acc;
    }
  }
}

}  // namespace ao::kernels::cpu::quant::avx2

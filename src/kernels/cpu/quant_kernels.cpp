#include "ao/core/cpu_features.h"
#include "kernels/cpu/quant_kernels.h"

#include <algorithm>
#include <vector>

namespace ao::kernels::cpu::quant {

bool cpu_has_avx2() {
  static const bool has = ao::cpu_features().avx2 && ao::cpu_features().fma;
  return has;
}

float dot_f32(const float* a, const float* b, int64_t n) {
  if (cpu_has_avx2()) return avx2::dot_f32(a, b, n);
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void gemv_affine_int8_ref(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0,
                          int64_t n1, float* y, int64_t ldy) {
  const int64_t groups = w.K / w.group;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t zp = w.zero_point ? w.zero_point[n * groups + g] : 0;
        float s = 0.0f;
        for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k)
          s += x[m * w.K + k] * static_cast<float>(w.q[n * w.K + k] - zp);
        acc += s * w.scale[n * groups + g];
      }
      y[m * ldy + (n - n0)] = acc;
    }
}

void gemv_affine_int8(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                      float* y, int64_t ldy) {
  if (cpu_has_avx2()) return avx2::gemv_affine_int8(w, x, M, n0, n1, y, ldy);
  gemv_affine_int8_ref(w, x, M, n0, n1, y, ldy);
}

void gemv_int4_plain_ref(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0,
                         int64_t n1, float* y, int64_t ldy) {
  const int64_t groups = (w.K + w.group - 1) / w.group;  // the last group may be partial
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        float dot = 0.0f, xs = 0.0f;
        for (int64_t k = g * w.group; k < std::min((g + 1) * w.group, w.K); ++k) {
          const uint8_t byte = w.q[n * (w.K / 2) + k / 2];
          const int nib = (k % 2 == 0) ? (byte & 0xF) : (byte >> 4);
          const float xv = x[m * w.K + k];
          dot += xv * static_cast<float>((nib ^ 8) - 8);
          xs += xv;
        }
        acc += dot * w.scale[g * w.N + n] + xs * w.zero[g * w.N + n];
      }
      y[m * ldy + (n - n0)] = acc;
    }
}

void gemv_int4_plain(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                     float* y, int64_t ldy) {
  if (cpu_has_avx2()) return avx2::gemv_int4_plain(w, x, M, n0, n1, y, ldy);
  gemv_int4_plain_ref(w, x, M, n0, n1, y, ldy);
}

void gemm_int8_int8_ref(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale,
                        int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t groups = w.K / w.group;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t zp = w.zero_point ? w.zero_point[n * groups + g] : 0;
        int32_t dot = 0;
        for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k)
          dot += static_cast<int32_t>(xq[m * w.K + k]) * (w.q[n * w.K + k] - zp);
        acc += (static_cast<float>(dot) * x_scale[m]) * w.scale[n * groups + g];
      }
      y[m * ldy + (n - n0)] = acc;
    }
}

void gemm_int8_int8(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale, int64_t M,
                    int64_t n0, int64_t n1, float* y, int64_t ldy) {
  if (cpu_has_avx2()) return avx2::gemm_int8_int8(w, xq, x_scale, M, n0, n1, y, ldy);
  gemm_int8_int8_ref(w, xq, x_scale, M, n0, n1, y, ldy);
}

}  // namespace ao::kernels::cpu::quant

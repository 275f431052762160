// AVX2+FMA bodies of the f32 GEMV, dot and axpy (compiled with -mavx2 -mfma).
#include <immintrin.h>

#include "kernels/cpu/gemv_rows_avx2.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu::detail {
namespace {

inline __m256 load8_f32(const float* p) { return _mm256_loadu_ps(p); }
inline float load1_f32(float v) { return v; }

}  // namespace

void gemv_rows_avx2(const float* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K) {
  gemv_rows_avx2_impl(W, x, y, n0, n1, K, load8_f32, load1_f32);
}

float dot_avx2(const float* a, const float* b, int64_t n) {
  return dot_row_avx2(a, b, n, load8_f32, load1_f32);
}

void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace ao::kernels::cpu::detail

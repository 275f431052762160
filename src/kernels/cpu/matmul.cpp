#include "ao/core/cpu_features.h"
#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "ao/core/parallel.h"

namespace ao::kernels::cpu {

namespace detail {

bool cpu_has_avx2_fma() {
  static const bool has = ao::cpu_features().avx2 && ao::cpu_features().fma;
  return has;
}

void gemv_rows_scalar(const float* W, const float* x, float* y, int64_t n0, int64_t n1, int64_t K) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* w = W + n * K;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += w[k] * x[k];
    y[n] = acc;
  }
}

}  // namespace detail

void gemv_f32_ref(const float* W, const float* x, float* y, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    double acc = 0.0;
    for (int64_t k = 0; k < K; ++k) acc += double(W[n * K + k]) * double(x[k]);
    y[n] = static_cast<float>(acc);
  }
}

void gemm_f32_ref(const float* x, const float* W, float* y, int64_t M, int64_t N, int64_t K) {
  for (int64_t m = 0; m < M; ++m) gemv_f32_ref(W, x + m * K, y + m * N, N, K);
}

void gemv_f32(const float* W, const float* x, float* y, int64_t N, int64_t K) {
  // At least 256 KiB of weights per task, so small layers stay on one thread.
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(K, 1));
  const bool avx2 = detail::cpu_has_avx2_fma();
  parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    if (avx2)
      detail::gemv_rows_avx2(W, x, y, n0, n1, K);
    else
      detail::gemv_rows_scalar(W, x, y, n0, n1, K);
  });
}

void gemm_f32(const float* x, const float* W, float* y, int64_t M, int64_t N, int64_t K) {
  if (M == 1) return gemv_f32(W, x, y, N, K);
  if (M * N * K < (int64_t{1} << 22)) {
    // Too small to pay for waking threads: one thread, row by row.
    const bool avx2 = detail::cpu_has_avx2_fma();
    for (int64_t m = 0; m < M; ++m) {
      if (avx2)
        detail::gemv_rows_avx2(W, x + m * K, y + m * N, 0, N, K);
      else
        detail::gemv_rows_scalar(W, x + m * K, y + m * N, 0, N, K);
    }
    return;
  }
  // OpenBLAS runs single-threaded inside our OpenMP workers, each on a slice of W's rows:
  // one thread pool instead of two competing ones.
  static const bool blas_single = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)blas_single;
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 22) / std::max<int64_t>(M * K, 1));
  parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M),
                static_cast<int>(n1 - n0), static_cast<int>(K), 1.0f, x, static_cast<int>(K),
                W + n0 * K, static_cast<int>(K), 0.0f, y + n0, static_cast<int>(N));
  });
}

float dot_f32(const float* a, const float* b, int64_t n) {
  if (detail::cpu_has_avx2_fma()) return detail::dot_avx2(a, b, n);
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  if (detail::cpu_has_avx2_fma()) return detail::axpy_avx2(a, x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace ao::kernels::cpu

// GEMV / GEMM with bf16 or f16 weights: dispatch and scalar paths.
#include "ao/core/cpu_features.h"
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "ao/core/dtype.h"
#include "ao/core/parallel.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu {
namespace {

inline float widen(uint16_t v, HalfType t) {
  return t == HalfType::bf16 ? bf16_to_f32(v) : f16_to_f32(v);
}

bool use_avx2(HalfType t) {
  return detail::cpu_has_avx2_fma() && (t == HalfType::bf16 || detail::cpu_has_f16c());
}

}  // namespace

namespace detail {

bool cpu_has_f16c() {
  static const bool has = ao::cpu_features().avx2_fma_f16c();
  return has;
}

void gemv_rows_half_scalar(const uint16_t* W, HalfType t, const float* x, float* y, int64_t n0,
                           int64_t n1, int64_t K) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    float acc = 0.0f;
    for (int64_t k = 0; k < K; ++k) acc += widen(w[k], t) * x[k];
    y[n] = acc;
  }
}

}  // namespace detail

void widen_half(const uint16_t* src, HalfType t, float* dst, int64_t n) {
  if (use_avx2(t)) return detail::widen_half_avx2(src, t, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = widen(src[i], t);
}

void gemv_half_ref(const uint16_t* W, HalfType t, const float* x, float* y, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {
    double acc = 0.0;
    for (int64_t k = 0; k < K; ++k) acc += double(widen(W[n * K + k], t)) * double(x[k]);
    y[n] = static_cast<float>(acc);
  }
}

void gemv_half(const uint16_t* W, HalfType t, const float* x, float* y, int64_t N, int64_t K) {
  const int64_t grain = std::max<int64_t>(16, 131072 / std::max<int64_t>(K, 1));
  const bool avx2 = use_avx2(t);
  parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    if (avx2)
      detail::gemv_rows_half_avx2(W, t, x, y, n0, n1, K);
    else
      detail::gemv_rows_half_scalar(W, t, x, y, n0, n1, K);
  });
}

void gemm_half(const float* x, const uint16_t* W, HalfType t, float* y, int64_t M, int64_t N,
               int64_t K) {
  if (M == 1) return gemv_half(W, t, x, y, N, K);
  static const bool blas_single = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)blas_single;
  // Rows of W per widened block: about 1 MiB of f32.
  const int64_t block = std::max<int64_t>(8, (int64_t{1} << 18) / std::max<int64_t>(K, 1));
  const int64_t grain = std::max<int64_t>(block, (int64_t{1} << 22) / std::max<int64_t>(M * K, 1));
  parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    std::vector<float> wf(static_cast<size_t>(std::min(block, n1 - n0) * K));
    for (int64_t b = n0; b < n1; b += block) {
      const int64_t rows = std::min(block, n1 - b);
      widen_half(W + b * K, t, wf.data(), rows * K);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M),
                  static_cast<int>(rows), static_cast<int>(K), 1.0f, x, static_cast<int>(K),
                  wf.data(), static_cast<int>(K), 0.0f, y + b, static_cast<int>(N));
    }
  });
}

}  // namespace ao::kernels::cpu

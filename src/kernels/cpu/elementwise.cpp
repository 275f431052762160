#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>

#include "ao/core/parallel.h"

namespace ao::kernels::cpu {

void rmsnorm_f32(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps) {
  parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(n, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   const float* xr = x + r * n;
                   float* yr = y + r * n;
                   float ss = 0.0f;
                   for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
                   const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
                   for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
                 }
               });
}

void silu_mul_f32(float* gate, const float* up, int64_t n) {
  parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

double log_softmax_f32(const float* x, float* out, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(double(x[i]) - lse);
  return lse;
}

}  // namespace ao::kernels::cpu

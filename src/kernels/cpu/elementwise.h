// Row-wise f32 ops of the transformer block: RMSNorm, SiLU-gated product, log-softmax.
#pragma once

#include <cstdint>

namespace ao::kernels::cpu {

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, for `rows` rows of length n. y may alias x.
void rmsnorm_f32(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul_f32(float* gate, const float* up, int64_t n);
// out[i] = x[i] - logsumexp(x); returns logsumexp(x). out may alias x.
double log_softmax_f32(const float* x, float* out, int64_t n);

}  // namespace ao::kernels::cpu

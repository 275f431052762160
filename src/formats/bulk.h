// Private: simple elementwise loops with an AVX2 version (bulk_avx2.cpp), bit-identical.
#pragma once

#include <cstdint>

namespace ao::formats::detail {

void div_scalar(const float* x, float s, float* out, int64_t n);  // out = x / s
void mul_scalar(const float* x, float s, float* out, int64_t n);  // out = x * s
// |x| max with torch.amax NaN propagation, folded into `acc`.
float abs_max(const float* x, int64_t n, float acc);

// Folds min and max of x[0..n) into *mn / *mx (NaN anywhere makes both NaN, as torch.amin
// and torch.amax).
void min_max(const float* x, int64_t n, float* mn, float* mx);

void min_max_avx2(const float* x, int64_t n, float* mn, float* mx);
void div_scalar_avx2(const float* x, float s, float* out, int64_t n);
void mul_scalar_avx2(const float* x, float s, float* out, int64_t n);
float abs_max_avx2(const float* x, int64_t n, float acc);

}  // namespace ao::formats::detail

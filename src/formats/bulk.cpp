#include "formats/bulk.h"

#include <cmath>

#include "ao/formats/float_formats.h"
#include "formats/math_util.h"

namespace ao::formats::detail {

void div_scalar(const float* x, float s, float* out, int64_t n) {
  if (formats_use_avx2()) return div_scalar_avx2(x, s, out, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] / s;
}

void mul_scalar(const float* x, float s, float* out, int64_t n) {
  if (formats_use_avx2()) return mul_scalar_avx2(x, s, out, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s;
}

float abs_max(const float* x, int64_t n, float acc) {
  if (formats_use_avx2()) return abs_max_avx2(x, n, acc);
  for (int64_t i = 0; i < n; ++i) acc = nan_max(acc, std::fabs(x[i]));
  return acc;
}

}  // namespace ao::formats::detail

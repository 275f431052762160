#include "formats/bulk.h"

#include <cmath>

#include "ao/formats/float_formats.h"
#include "formats/math_util.h"

namespace ao::formats::detail {

namespace {
// x op NaN is NaN, but which NaN (x's or s's payload) depends on the operand order the
// compiler picks for a commutative instruction; fix it: a NaN scalar wins.
bool fill_if_nan(float s, float* out, int64_t n) {
  if (s == s) return false;
  for (int64_t i = 0; i < n; ++i) out[i] = s;
  return true;
}
}  // namespace

void div_scalar(const float* x, float s, float* out, int64_t n) {
  if (fill_if_nan(s, out, n)) return;
  if (formats_use_avx2()) return div_scalar_avx2(x, s, out, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] / s;
}

void mul_scalar(const float* x, float s, float* out, int64_t n) {
  if (fill_if_nan(s, out, n)) return;
  if (formats_use_avx2()) return mul_scalar_avx2(x, s, out, n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s;
}

void min_max(const float* x, int64_t n, float* mn, float* mx) {
  if (formats_use_avx2()) return min_max_avx2(x, n, mn, mx);
  for (int64_t i = 0; i < n; ++i) {
    *mn = nan_min(*mn, x[i]);
    *mx = nan_max(*mx, x[i]);
  }
}

float abs_max(const float* x, int64_t n, float acc) {
  if (formats_use_avx2()) return abs_max_avx2(x, n, acc);
  for (int64_t i = 0; i < n; ++i) acc = nan_max(acc, std::fabs(x[i]));
  return acc;
}

}  // namespace ao::formats::detail

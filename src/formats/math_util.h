// Private helpers shared by the formats implementation: PyTorch-style rounding to the
// compute dtype, NaN-propagating min/max (torch.amin/amax/minimum semantics), row loads
// from f32/bf16 buffers, and the affine row kernels (scalar + AVX2 dispatch).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ao/core/dtype.h"
#include "ao/core/error.h"
#include "ao/formats/affine.h"
#include "ao/formats/float_formats.h"

namespace ao::formats::detail {

// Rounds a float to the precision of a compute dtype (f32: identity, bf16: RNE).
struct Rounder {
  bool bf16;
  explicit Rounder(DType t) : bf16(t == DType::bf16) {}
  float operator()(float v) const { return bf16 ? round_to_bf16(v) : v; }
};

inline void check_float_input(DType t, const char* what) {
  AO_CHECK(t == DType::f32 || t == DType::bf16, "{}: dtype must be f32 or bf16, got {}", what,
           dtype_name(t));
}

inline float nan_min(float a, float b) {
  if (a != a || b != b) return std::numeric_limits<float>::quiet_NaN();
  return a < b ? a : b;
}
inline float nan_max(float a, float b) {
  if (a != a || b != b) return std::numeric_limits<float>::quiet_NaN();
  return a > b ? a : b;
}
// torch.clamp(x, min=m): NaN stays NaN.
inline float clamp_min(float x, float m) { return x != x ? x : (x < m ? m : x); }

inline float load_one(const void* x, DType t, int64_t i) {
  if (t == DType::f32) return static_cast<const float*>(x)[i];
  return bf16_bits_to_f32(static_cast<const uint16_t*>(x)[i]);
}
inline void load_row(const void* x, DType t, int64_t r, int64_t k, float* row) {
  if (t == DType::f32) {
    std::memcpy(row, static_cast<const float*>(x) + r * k, k * sizeof(float));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(x) + r * k;
    for (int64_t j = 0; j < k; ++j) row[j] = bf16_bits_to_f32(p[j]);
  }
}
inline void store_row(const float* row, void* out, DType t, int64_t r, int64_t k) {
  if (t == DType::f32) {
    std::memcpy(static_cast<float*>(out) + r * k, row, k * sizeof(float));
  } else {
    // PyTorch's vectorized f32 -> bf16 conversion (what a tensor .to(bf16) runs) writes
    // NaN as 0xFFFF; only its scalar tail path writes 0x7FC0. Follow the vectorized one.
    uint16_t* p = static_cast<uint16_t*>(out) + r * k;
    for (int64_t j = 0; j < k; ++j) p[j] = row[j] != row[j] ? 0xFFFF : f32_to_bf16_rne(row[j]);
  }
}

// Affine row kernels; the public functions validate and call these.
void quantize_affine_rows(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                          const float* scale, Rounder scale_round, const int32_t* zero_point,
                          IntFormat fmt, Rounder compute, uint8_t* q);
void dequantize_affine_rows(const uint8_t* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                            const float* scale, const int32_t* zero_point, void* out,
                            DType out_dtype);

// One segment of one row: x[0..len) with one scale/zero point. Scalar reference and AVX2.
struct AffineSegment {
  float inv_scale;  // 1/scale, rounded to the scale dtype
  float zp;         // zero point (0 when absent)
  bool has_zp;
  float qmin, qmax;
  bool bf16;  // compute dtype bf16
  bool is_signed;
};
void quantize_affine_segment_ref(const AffineSegment& s, const float* x, int64_t len, uint8_t* q);
void quantize_affine_segment_avx2(const AffineSegment& s, const float* x, int64_t len, uint8_t* q);
void dequantize_affine_segment_ref(const uint8_t* q, bool is_signed, float zp, float scale,
                                   int64_t len, float* out);
void dequantize_affine_segment_avx2(const uint8_t* q, bool is_signed, float zp, float scale,
                                    int64_t len, float* out);

}  // namespace ao::formats::detail

// Private: the one parameterised float32 -> small-float encoder behind every fp8/fp6/fp4
// format (scalar here, AVX2 in float_formats_avx2.cpp), and the dispatch hooks.
//
// Both PyTorch's fp8 casts (c10 fp8e4m3fn_from_fp32_value / fp8e5m2_from_fp32_value) and
// TorchAO's `_f32_to_floatx_unpacked` follow the same plan on |x|'s bits:
//   saturate branch (|x| >= threshold) -> a fixed code,
//   denormal branch (|x| < min normal)  -> float add of a magic constant, subtract its bits,
//   normal branch                       -> add bias + round-to-even bits, shift.
// They differ only in constants and in what NaN does: PyTorch maps it to the NaN code,
// TorchAO's fp6/fp4 code lets it fall into the normal branch (the float compares are false).
#pragma once

#include <cstdint>
#include <cstring>

#include "ao/formats/float_formats.h"

namespace ao::formats::detail {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct EncodeParams {
  uint32_t sat_bits;  // |x| bits >= this take the saturate branch
  uint32_t sat_code;  // code for that branch (without sign)
  bool nan_to_code;   // true: NaN -> nan_code; false: NaN takes the normal branch
  uint32_t nan_code;
  uint32_t denorm_bits;  // |x| bits < this take the denormal branch
  uint32_t denorm_mask;  // bits of the magic float added in the denormal branch
  int32_t normal_add;    // exponent re-bias + round bias (without the odd bit)
  int shift;             // 23 - mbits
  int sign_shift;        // right shift of the f32 sign bit onto the code's sign bit
  uint32_t sign_mask;    // the code's sign bit
  float max_value;       // clamp bound used when saturating
};

// Parameters for fp8 e4m3fn, e5m2 (PyTorch casts) and fp6/fp4 (TorchAO's routine).
const EncodeParams& encode_params(FloatFormat f);

inline uint8_t encode_with(const EncodeParams& p, float x) {
  uint32_t u = f32_bits(x);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const bool is_nan = u > 0x7F800000u;
  uint32_t r;
  if (is_nan && p.nan_to_code) {
    r = p.nan_code;
  } else if (!is_nan && u >= p.sat_bits) {
    r = p.sat_code;
  } else if (u < p.denorm_bits) {
    r = f32_bits(f32_from_bits(u) + f32_from_bits(p.denorm_mask)) - p.denorm_mask;
  } else {
    int32_t n = static_cast<int32_t>(u);
    const int32_t odd = (n >> p.shift) & 1;
    n += p.normal_add;
    n += odd;
    r = static_cast<uint32_t>(n >> p.shift);
  }
  return static_cast<uint8_t>((r & 0xFFu) | ((sign >> p.sign_shift) & p.sign_mask));
}

inline float clamp_keep_nan(float x, float m) {
  if (x != x) return x;
  return x > m ? m : (x < -m ? -m : x);
}

// 256-entry decode tables (codes beyond the format's width decode like TorchAO would treat
// the low bits; only valid codes are used in practice).
const float* decode_table(FloatFormat f);

uint8_t e8m0_encode(float x);

// AVX2 kernels (float_formats_avx2.cpp); only called when formats_use_avx2().
void encode_avx2(const EncodeParams& p, const float* x, uint8_t* codes, int64_t n, bool saturate);
void encode_e8m0_avx2(const float* x, uint8_t* codes, int64_t n);
void decode_arith_avx2(FloatFormat f, const uint8_t* codes, float* out, int64_t n);
void decode_e8m0_avx2(const uint8_t* codes, float* out, int64_t n);

}  // namespace ao::formats::detail

// Small floating-point element formats (fp8 e4m3fn/e5m2, fp6 e2m3/e3m2, fp4 e2m1, e8m0):
// scalar encode/decode bit-exact with PyTorch 2.11 / TorchAO 0.18, bulk versions with an
// AVX2 path, and one traits table so that adding a format means adding a row.
//
// Codes are held one per byte, in the low bits (fp6: bits 0-5, fp4: bits 0-3), exactly as
// TorchAO's "unpacked" tensors; see ao/formats/packing.h for packed storage.
//
// Encoding semantics (see docs/FORMATS.md):
//  - f8 e4m3fn / e5m2: PyTorch's `tensor.to(float8)` cast: round to nearest even; finite
//    values beyond the range become NaN (e4m3fn, >= 480) or Inf (e5m2, >= 61440); NaN stays
//    NaN. TorchAO clamps to +-max before casting; `saturate = true` does that clamp.
//  - f6 / f4: TorchAO's `_f32_to_floatx_unpacked`: round to nearest even, saturating to
//    +-max (Inf too). These formats have no NaN code; a NaN input yields the code TorchAO's
//    bit arithmetic produces (deterministic, documented in docs/FORMATS.md).
//  - e8m0: PyTorch's `to(float8_e8m0fnu)`: sign ignored, exponent rounded to nearest even on
//    the mantissa, NaN/Inf -> 255.
#pragma once

#include <cstdint>
#include <string_view>

namespace ao::formats {

enum class FloatFormat : uint8_t { f8_e4m3fn, f8_e5m2, f6_e2m3, f6_e3m2, f4_e2m1, e8m0, count_ };

using EncodeFn = uint8_t (*)(float x);
using DecodeFn = float (*)(uint8_t code);
using EncodeBulkFn = void (*)(const float* x, uint8_t* codes, int64_t n, bool saturate);
using DecodeBulkFn = void (*)(const uint8_t* codes, float* out, int64_t n);

struct FloatFormatInfo {
  FloatFormat format;
  const char* name;  // "f8_e4m3fn", "f8_e5m2", "f6_e2m3", "f6_e3m2", "f4_e2m1", "e8m0"
  int bits;          // element width in bits
  int ebits, mbits;  // exponent and mantissa bits (e8m0: 8, 0)
  int exp_bias;
  float max_value;  // largest finite value (e8m0: 2^127)
  int max_pow2;     // floor(log2(max_value)): the "emax" MX scales use
  bool has_inf, has_nan;
  EncodeFn encode;               // scalar reference, PyTorch/TorchAO semantics (no clamp)
  DecodeFn decode;               // scalar reference
  EncodeBulkFn encode_bulk_ref;  // scalar loop
  DecodeBulkFn decode_bulk_ref;
  EncodeBulkFn encode_bulk;  // fastest available on this CPU (bit-identical to ref)
  DecodeBulkFn decode_bulk;
};

// The traits table, indexed by FloatFormat.
const FloatFormatInfo& float_format_info(FloatFormat f);
FloatFormat float_format_from_name(std::string_view name);  // throws ao::Error if unknown

// ---- scalar codecs (the reference) ------------------------------------------------------
uint8_t f32_to_f8_e4m3fn(float x);
uint8_t f32_to_f8_e5m2(float x);
uint8_t f32_to_f6_e2m3(float x);
uint8_t f32_to_f6_e3m2(float x);
uint8_t f32_to_f4_e2m1(float x);
uint8_t f32_to_e8m0(float x);
float f8_e4m3fn_to_f32(uint8_t c);
float f8_e5m2_to_f32(uint8_t c);
float f6_e2m3_to_f32(uint8_t c);
float f6_e3m2_to_f32(uint8_t c);
float f4_e2m1_to_f32(uint8_t c);
float e8m0_to_f32(uint8_t c);  // 0 -> 2^-127, 255 -> NaN (as PyTorch)

// Encode with optional clamp to +-max first (NaN passes through the clamp, as torch.clamp).
uint8_t encode(FloatFormat f, float x, bool saturate = false);
float decode(FloatFormat f, uint8_t code);

// Bulk: n values; uses the fastest path (AVX2 when the CPU has AVX2+FMA+F16C). `saturate`
// is ignored for e8m0 (its encoder already maps everything to a code).
void encode_bulk(FloatFormat f, const float* x, uint8_t* codes, int64_t n, bool saturate = false);
void decode_bulk(FloatFormat f, const uint8_t* codes, float* out, int64_t n);

// True when the AVX2 paths are used: the CPU has AVX2, FMA and F16C (checked once with
// __builtin_cpu_supports), the environment variable AO_FORMATS_NO_SIMD is not set, and
// set_formats_simd(false) was not called.
bool formats_use_avx2();
// Enables/disables the AVX2 paths (they are never enabled on a CPU without AVX2). For tests
// and benchmarks that compare the vectorized paths with the scalar reference.
void set_formats_simd(bool enabled);

// bfloat16 helpers with PyTorch's rounding (RNE; NaN -> quiet NaN 0x7FC0). Formats that
// compute "in bf16" round after every operation, as PyTorch's CPU kernels do.
uint16_t f32_to_bf16_rne(float x);
inline float bf16_bits_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline float round_to_bf16(float x) { return bf16_bits_to_f32(f32_to_bf16_rne(x)); }

}  // namespace ao::formats

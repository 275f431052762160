// Element types and their traits table. Adding a type = adding a row in dtype.cpp.
// Packed sub-byte types store several elements per byte (or 4 fp6 values in 3 bytes);
// their `bits` is the element width and storage size is computed by dtype_storage_bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ao {

enum class DType : uint8_t {
  f32,
  f64,
  f16,
  bf16,
  f8_e4m3fn,
  f8_e5m2,
  e8m0,       // MX block scale: biased power-of-two exponent, 255 = NaN
  i8,
  u8,
  i16,
  u16,
  i32,
  u32,
  i64,
  u64,
  boolean,
  // packed storage types used by quantized formats
  u4x2,       // two uint4 per byte, element 2i in the low nibble
  i4x2,       // two int4 per byte, element 2i in the low nibble
  f4_e2m1x2,  // two fp4 e2m1 per byte, element 2i in the low nibble
  f6_e2m3x4,  // four fp6 e2m3 packed into 3 bytes
  f6_e3m2x4,  // four fp6 e3m2 packed into 3 bytes
  count_
};

struct DTypeInfo {
  DType dtype;
  const char* name;              // our name: "f32", "bf16", "f8_e4m3fn", ...
  const char* safetensors_name;  // "F32", "BF16", ... (nullptr if safetensors has none)
  const char* torch_name;        // "float32", "bfloat16", ... (nullptr if torch has none)
  int bits;                      // bits per element
  bool is_float;
  bool is_signed;
  bool is_packed;                // several elements per storage unit
};

const DTypeInfo& dtype_info(DType t);
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
// Bytes needed to store `numel` elements (packed types round up to whole storage units).
size_t dtype_storage_bytes(DType t, int64_t numel);
// Size of one element in bytes for byte-addressable types; throws for packed types.
size_t dtype_size(DType t);

// Lookups by name; throw ao::Error naming the unknown string.
DType dtype_from_name(std::string_view name);
DType dtype_from_safetensors(std::string_view name);
DType dtype_from_torch(std::string_view name);  // accepts "torch.bfloat16" or "bfloat16"

// ---- scalar conversions for the 16-bit float types (round to nearest even) ----
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t x);

// Converts a contiguous buffer between f32, f64, f16, bf16 and the integer types
// (fp8 and other low-precision formats live in ao/formats).
void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, int64_t n);

}  // namespace ao

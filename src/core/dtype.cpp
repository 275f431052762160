#include "ao/core/dtype.h"

#include <cmath>
#include <cstring>
#include <string>

#include "ao/core/error.h"

namespace ao {
namespace {

// One row per dtype, in enum order.
constexpr DTypeInfo kDTypes[] = {
    {DType::f32, "f32", "F32", "float32", 32, true, true, false},
    {DType::f64, "f64", "F64", "float64", 64, true, true, false},
    {DType::f16, "f16", "F16", "float16", 16, true, true, false},
    {DType::bf16, "bf16", "BF16", "bfloat16", 16, true, true, false},
    {DType::f8_e4m3fn, "f8_e4m3fn", "F8_E4M3", "float8_e4m3fn", 8, true, true, false},
    {DType::f8_e5m2, "f8_e5m2", "F8_E5M2", "float8_e5m2", 8, true, true, false},
    {DType::e8m0, "e8m0", "F8_E8M0", "float8_e8m0fnu", 8, true, false, false},
    {DType::i8, "i8", "I8", "int8", 8, false, true, false},
    {DType::u8, "u8", "U8", "uint8", 8, false, false, false},
    {DType::i16, "i16", "I16", "int16", 16, false, true, false},
    {DType::u16, "u16", "U16", "uint16", 16, false, false, false},
    {DType::i32, "i32", "I32", "int32", 32, false, true, false},
    {DType::u32, "u32", "U32", "uint32", 32, false, false, false},
    {DType::i64, "i64", "I64", "int64", 64, false, true, false},
    {DType::u64, "u64", "U64", "uint64", 64, false, false, false},
    {DType::boolean, "bool", "BOOL", "bool", 8, false, false, false},
    {DType::u4x2, "u4x2", nullptr, nullptr, 4, false, false, true},
    {DType::i4x2, "i4x2", nullptr, nullptr, 4, false, true, true},
    {DType::f4_e2m1x2, "f4_e2m1x2", "F4", "float4_e2m1fn_x2", 4, true, true, true},
    {DType::f6_e2m3x4, "f6_e2m3x4", "F6_E2M3", nullptr, 6, true, true, true},
    {DType::f6_e3m2x4, "f6_e3m2x4", "F6_E3M2", nullptr, 6, true, true, true},
};
static_assert(sizeof(kDTypes) / sizeof(kDTypes[0]) == static_cast<size_t>(DType::count_));

template <typename Pred>
DType find_dtype(Pred pred, std::string_view what, std::string_view name) {
  for (const auto& row : kDTypes)
    if (pred(row)) return row.dtype;
  fail("unknown {} dtype '{}'", what, name);
}

}  // namespace

const DTypeInfo& dtype_info(DType t) {
  auto i = static_cast<size_t>(t);
  AO_CHECK(i < static_cast<size_t>(DType::count_), "invalid dtype code {}", i);
  return kDTypes[i];
}

size_t dtype_storage_bytes(DType t, int64_t numel) {
  AO_CHECK(numel >= 0, "negative element count {}", numel);
  const auto& info = dtype_info(t);
  if (t == DType::f6_e2m3x4 || t == DType::f6_e3m2x4) return static_cast<size_t>((numel + 3) / 4) * 3;
  if (info.is_packed) return static_cast<size_t>((numel + 1) / 2);
  return static_cast<size_t>(numel) * (info.bits / 8);
}

size_t dtype_size(DType t) {
  const auto& info = dtype_info(t);
  AO_CHECK(!info.is_packed, "dtype {} packs several elements per byte; it has no element size",
           info.name);
  return info.bits / 8;
}

DType dtype_from_name(std::string_view name) {
  return find_dtype([&](const DTypeInfo& r) { return name == r.name; }, "", name);
}
DType dtype_from_safetensors(std::string_view name) {
  return find_dtype(
      [&](const DTypeInfo& r) { return r.safetensors_name && name == r.safetensors_name; },
      "safetensors", name);
}
DType dtype_from_torch(std::string_view name) {
  if (name.starts_with("torch.")) name.remove_prefix(6);
  return find_dtype([&](const DTypeInfo& r) { return r.torch_name && name == r.torch_name; },
                    "torch", name);
}

// ---- 16-bit floats --------------------------------------------------------------------

uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_f32(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((absx >> 13) & 0x3ffu));  // NaN
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in f16
    // value = absx as float; f16 subnormal unit is 2^-24. Round half to even.
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t exp = absx >> 23;
    const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // brings to units of 2^-24 (shift in [14, 24])
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);   // round to nearest even on the 13 dropped bits
  return static_cast<uint16_t>(sign | (r >> 13));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- buffer conversion -----------------------------------------------------------------
namespace {

double load_as_double(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::i8: return static_cast<const int8_t*>(p)[i];
    case DType::u8: return static_cast<const uint8_t*>(p)[i];
    case DType::boolean: return static_cast<const uint8_t*>(p)[i] != 0;
    case DType::i16: return static_cast<const int16_t*>(p)[i];
    case DType::u16: return static_cast<const uint16_t*>(p)[i];
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::u32: return static_cast<const uint32_t*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::u64: return static_cast<double>(static_cast<const uint64_t*>(p)[i]);
    default: fail("convert: reading dtype {} is not supported here (see ao/formats)", dtype_name(t));
  }
}

template <typename I>
I saturate_int(double v) {
  if (std::isnan(v)) return 0;
  v = std::nearbyint(v);
  if (v <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

void store_double(void* p, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::i8: static_cast<int8_t*>(p)[i] = saturate_int<int8_t>(v); break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = saturate_int<uint8_t>(v); break;
    case DType::boolean: static_cast<uint8_t*>(p)[i] = v != 0; break;
    case DType::i16: static_cast<int16_t*>(p)[i] = saturate_int<int16_t>(v); break;
    case DType::u16: static_cast<uint16_t*>(p)[i] = saturate_int<uint16_t>(v); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = saturate_int<int32_t>(v); break;
    case DType::u32: static_cast<uint32_t*>(p)[i] = saturate_int<uint32_t>(v); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = saturate_int<int64_t>(v); break;
    case DType::u64: static_cast<uint64_t*>(p)[i] = saturate_int<uint64_t>(v); break;
    default: fail("convert: writing dtype {} is not supported here (see ao/formats)", dtype_name(t));
  }
}

}  // namespace

void convert_buffer(const void* src, DType src_t, void* dst, DType dst_t, int64_t n) {
  if (src_t == dst_t) {
    std::memcpy(dst, src, dtype_storage_bytes(src_t, n));
    return;
  }
  // Fast paths for the conversions models use all the time.
  if (dst_t == DType::f32 && src_t == DType::bf16) {
    auto* s = static_cast<const uint16_t*>(src);
    auto* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
    return;
  }
  if (dst_t == DType::f32 && src_t == DType::f16) {
    auto* s = static_cast<const uint16_t*>(src);
    auto* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f16_to_f32(s[i]);
    return;
  }
  if (src_t == DType::f32 && dst_t == DType::bf16) {
    auto* s = static_cast<const float*>(src);
    auto* d = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_double(dst, dst_t, i, load_as_double(src, src_t, i));
}

}  // namespace ao

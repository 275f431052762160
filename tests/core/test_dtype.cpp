#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ao/core/dtype.h"
#include "ao/core/error.h"

using namespace ao;

namespace {
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// Independent reference: round to nearest even on the value, via double arithmetic.
uint16_t ref_bf16(float x) {
  if (std::isnan(x)) return 0x7fc0;
  const uint32_t u = bits(x);
  const uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  const double dl = from_bits(lo), dh = from_bits(hi);
  if (std::isinf(x)) return static_cast<uint16_t>(u >> 16);
  const double dx = x;
  const double el = std::abs(dx - dl), eh = std::isinf(from_bits(hi)) ? std::abs(dx - std::ldexp(1.0, 128) * (x < 0 ? -1 : 1)) : std::abs(dx - dh);
  if (el < eh) return static_cast<uint16_t>(lo >> 16);
  if (eh < el) return static_cast<uint16_t>(hi >> 16);
  return static_cast<uint16_t>(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}
}  // namespace

TEST(CoreDtype, TableLookups) {
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::bf16);
  EXPECT_EQ(dtype_from_safetensors("F8_E4M3"), DType::f8_e4m3fn);
  EXPECT_EQ(dtype_from_torch("torch.float8_e5m2"), DType::f8_e5m2);
  EXPECT_EQ(dtype_from_name("i4x2"), DType::i4x2);
  EXPECT_THROW(dtype_from_safetensors("F13"), Error);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  for (int i = 0; i < static_cast<int>(DType::count_); ++i)
    EXPECT_EQ(static_cast<int>(dtype_info(static_cast<DType>(i)).dtype), i);
}

TEST(CoreDtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);  // halfway, even stays
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);  // halfway, odd rounds up
  EXPECT_EQ(f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001u)))));  // NaN stays NaN
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) {
    const float x = from_bits(rng());
    if (std::isnan(x)) continue;
    ASSERT_EQ(f32_to_bf16(x), ref_bf16(x)) << std::hex << bits(x);
  }
}

TEST(CoreDtype, F16ExhaustiveRoundTripAndRounding) {
  // Every f16 code decodes and re-encodes to itself (NaNs stay NaN).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);                 // tie to even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);                 // 1.5 ulp -> 2 (even)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f), 0x0001);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);          // tie to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Midpoints between consecutive f16 values round to the even neighbour.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const double a = f16_to_f32(static_cast<uint16_t>(h)), b = f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((a + b) / 2);
    if (static_cast<double>(mid) != (a + b) / 2) continue;
    ASSERT_EQ(f32_to_f16(mid), (h & 1) ? h + 1 : h) << h;
  }
}

TEST(CoreDtype, ConvertBufferSaturatesIntegers) {
  const float src[] = {-1e9f, -128.5f, 0.5f, 1.5f, 1e9f, std::nanf("")};
  int8_t dst[6];
  convert_buffer(src, DType::f32, dst, DType::i8, 6);
  EXPECT_EQ(dst[0], -128);
  EXPECT_EQ(dst[1], -128);
  EXPECT_EQ(dst[2], 0);
  EXPECT_EQ(dst[3], 2);
  EXPECT_EQ(dst[4], 127);
  EXPECT_EQ(dst[5], 0);
  uint8_t fp8[2] = {0, 0};
  EXPECT_THROW(convert_buffer(src, DType::f32, fp8, DType::f8_e4m3fn, 2), Error);
}

// Scalar numerics of the quantized types: small floats, E8M0, swizzle, affine qparams.
#include <gtest/gtest.h>

#include <cmath>

#include "quant/quant_numerics.h"

using namespace ao::quant::detail;

TEST(QuantNumerics, MiniFloatRoundTripsEveryCode) {
  for (const MiniFloat& f : {kE4M3, kE5M2, kE2M3, kE3M2, kE2M1}) {
    const int n = 1 << (1 + f.ebits + f.mbits);
    for (int c = 0; c < n; ++c) {
      const float v = decode_minifloat(static_cast<uint8_t>(c), f);
      if (std::isnan(v) || std::isinf(v)) continue;
      const uint8_t back = encode_minifloat(v, f);
      if (v == 0.0f) {
        EXPECT_EQ(decode_minifloat(back, f), 0.0f);
        continue;
      }
      EXPECT_EQ(back, c) << "ebits " << f.ebits << " value " << v;
    }
  }
}

TEST(QuantNumerics, MiniFloatRoundsHalfToEvenAndSaturates) {
  EXPECT_EQ(decode_minifloat(encode_minifloat(448.0f, kE4M3), kE4M3), 448.0f);
  EXPECT_EQ(decode_minifloat(encode_minifloat(1e9f, kE4M3), kE4M3), 448.0f);
  EXPECT_EQ(decode_minifloat(encode_minifloat(-7.0f, kE2M1), kE2M1), -6.0f);
  EXPECT_EQ(decode_minifloat(encode_minifloat(2.5f, kE2M1), kE2M1), 2.0f);  // tie -> even mantissa
  EXPECT_EQ(decode_minifloat(encode_minifloat(3.5f, kE2M1), kE2M1), 4.0f);
  EXPECT_EQ(decode_minifloat(encode_minifloat(0.25f, kE2M1), kE2M1),
            0.0f);  // half of the smallest subnormal
  EXPECT_EQ(decode_minifloat(encode_minifloat(0.75f, kE2M1), kE2M1), 1.0f);
  EXPECT_TRUE(std::isnan(decode_minifloat(0x7F, kE4M3)));
}

TEST(QuantNumerics, SwizzledIndexIsAPermutationOfThePaddedGrid) {
  const int64_t rows = 200, cols = 6, size = swizzled_size(rows, cols);
  EXPECT_EQ(size, 256 * 8);
  std::vector<int> seen(static_cast<size_t>(size), 0);
  for (int64_t r = 0; r < 256; ++r)
    for (int64_t c = 0; c < 8; ++c) ++seen[static_cast<size_t>(swizzled_index(r, c, cols))];
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_EQ(swizzled_index(0, 0, cols), 0);
  EXPECT_EQ(swizzled_index(0, 1, cols), 1);
  EXPECT_EQ(swizzled_index(32, 0, cols), 4);
  EXPECT_EQ(swizzled_index(1, 0, cols), 16);
  EXPECT_EQ(swizzled_index(0, 4, cols), 512);
}

TEST(QuantNumerics, SymmetricInt8DividesBy127Point5) {
  const float x[4] = {-2.0f, 1.0f, 0.5f, 0.0f};
  const AffineParams p = choose_affine_params(x, 4, Mapping::symmetric, -128, 127, kF32Eps);
  EXPECT_FLOAT_EQ(p.scale, 2.0f / 127.5f);
  EXPECT_EQ(p.zero_point, 0);
  const AffineParams z = choose_affine_params(x + 3, 1, Mapping::symmetric, -128, 127, kF32Eps);
  EXPECT_EQ(z.scale, kF32Eps);
}

// Affine integer quantization against TorchAO fixtures: choose_qparams_affine,
// quantize_affine, dequantize_affine for int1..int8 / uint1..uint8, three mappings, f32 and
// bf16 inputs, per-tensor / per-row / per-group; tinygemm float zero point; plain Int4Tensor.
#include <cmath>
#include <random>

#include "ao/core/error.h"
#include "ao/formats/affine.h"
#include "ao/formats/float_formats.h"
#include "formats/fixture_util.h"
#include "formats/math_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

MappingType mapping_from(const std::string& s) {
  if (s == "SYMMETRIC") return MappingType::symmetric;
  if (s == "SYMMETRIC_NO_CLIPPING_ERR") return MappingType::symmetric_no_clipping_err;
  return MappingType::asymmetric;
}
DType dt(const std::string& s) { return s == "bf16" ? DType::bf16 : DType::f32; }

std::vector<float> round_vec(std::vector<float> v, DType t) {
  if (t == DType::bf16)
    for (auto& x : v) x = round_to_bf16(x);
  return v;
}

TEST(FormatAffine, MatchesTorchAO) {
  const Fixture fx("affine.safetensors");
  int checked = 0, dq_checked = 0;
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    SCOPED_TRACE(c.dump());
    const DType xd = dt(c["dtype"]);
    const auto shape = fx.shape("x_" + c["dtype"].get<std::string>());
    const auto x = fx.bytes("x_" + c["dtype"].get<std::string>());
    const int64_t n = shape[0], k = shape[1];
    const Block block{c["block"][0].get<int64_t>(), c["block"][1].get<int64_t>()};
    const IntFormat fmt =
        c.contains("quant_range")
            ? int_format_range(c["bits"], c["signed"], c["quant_range"][0], c["quant_range"][1])
            : int_format(c["bits"], c["signed"]);
    AffineOptions opt;
    opt.scale_dtype = dt(c["scale_dtype"]);
    if (c["eps"] == "f32_eps") opt.eps = std::ldexp(1.0f, -23);
    const int64_t nb = check_block(n, k, block, "test");
    std::vector<float> scale(nb);
    std::vector<int32_t> zp(nb);
    choose_qparams_affine(x.data(), xd, n, k, block, mapping_from(c["mapping"]), fmt, scale.data(),
                          zp.data(), opt);
    EXPECT_TRUE(same_vec(scale, fx.get<float>(key + ".scale")));
    EXPECT_TRUE(same_vec(zp, fx.get<int32_t>(key + ".zp")));
    std::vector<uint8_t> q(n * k);
    quantize_affine(x.data(), xd, n, k, block, scale.data(), *opt.scale_dtype, zp.data(), fmt,
                    q.data());
    EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
    if (fx.has(key + ".dq")) {
      std::vector<uint8_t> out(n * k * (xd == DType::bf16 ? 2 : 4));
      dequantize_affine(q.data(), fmt, n, k, block, scale.data(), zp.data(), out.data(), xd);
      EXPECT_TRUE(same_vec(out, fx.bytes(key + ".dq")));
      ++dq_checked;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 98);
  EXPECT_GE(dq_checked, 30);
}

TEST(FormatAffine, Int4LayoutsMatchTorchAO) {
  const Fixture fx("int4.safetensors");
  int checked = 0;
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    SCOPED_TRACE(key);
    const DType xd = dt(c["dtype"]);
    const std::string xn = "x_" + c["dtype"].get<std::string>();
    const auto x = fx.bytes(xn);
    const int64_t n = fx.shape(xn)[0], k = fx.shape(xn)[1], g = c["group"];
    if (c["kind"] == "tinygemm") {
      const IntFormat u4 = int_format(4, false);
      std::vector<float> scale(n * k / g), zero(n * k / g);
      choose_qparams_affine_tinygemm(x.data(), xd, n, k, Block::per_group(g), u4, scale.data(),
                                     zero.data());
      EXPECT_TRUE(same_vec(scale, fx.get<float>(key + ".scale")));
      EXPECT_TRUE(same_vec(zero, fx.get<float>(key + ".zero")));
      std::vector<uint8_t> q(n * k);
      quantize_affine_tinygemm(x.data(), xd, n, k, Block::per_group(g), scale.data(), zero.data(),
                               xd, u4, q.data());
      EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
      std::vector<uint8_t> out(n * k * (xd == DType::bf16 ? 2 : 4));
      dequantize_affine_tinygemm(q.data(), u4, n, k, Block::per_group(g), scale.data(), zero.data(),
                                 out.data(), xd);
      EXPECT_TRUE(same_vec(out, fx.bytes(key + ".dq")));
    } else {
      std::vector<int8_t> q(n * k);
      std::vector<float> s(n * k / g), z(n * k / g);
      int4_row_quantize_zp(x.data(), xd, n, k, g, q.data(), s.data(), z.data(), xd);
      EXPECT_TRUE(same_vec(q, fx.get<int8_t>(key + ".q")));
      EXPECT_TRUE(same_vec(s, fx.get<float>(key + ".scale")));
      EXPECT_TRUE(same_vec(z, fx.get<float>(key + ".zero")));
      // round trip through our dequantize: within half a step (+ rounding) of the input
      std::vector<float> y(n * k), xf(n * k);
      int4_row_dequantize_zp(q.data(), n, k, g, s.data(), z.data(), y.data(), DType::f32);
      for (int64_t i = 0; i < n * k; ++i)
        xf[i] = xd == DType::f32 ? reinterpret_cast<const float*>(x.data())[i]
                                 : bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(x.data())[i]);
      for (int64_t i = 0; i < n * k; ++i) {
        const float step = s[(i % k) / g * n + i / k];
        EXPECT_LE(std::fabs(y[i] - xf[i]), 0.51f * step + 1e-3f * std::fabs(xf[i]) + 1e-30f) << i;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 16);
}

TEST(FormatAffine, BadArguments) {
  std::vector<float> x(64, 1.0f), s(64);
  std::vector<int32_t> z(64);
  EXPECT_THROW(int_format(0, true), ao::Error);
  EXPECT_THROW(int_format(9, false), ao::Error);
  EXPECT_THROW(int_format_range(8, true, -129, 0), ao::Error);
  EXPECT_THROW(int_format_range(4, false, 3, 3), ao::Error);
  EXPECT_EQ(int_format_range(8, true, -64, 63).qmin(), -64);
  try {
    choose_qparams_affine(x.data(), DType::f32, 2, 32, Block::per_group(24), MappingType::symmetric,
                          int_format(4, true), s.data(), z.data());
    FAIL() << "expected ao::Error";
  } catch (const ao::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not divide"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      choose_qparams_affine(x.data(), DType::f16, 2, 32, Block::per_row(32), MappingType::symmetric,
                            int_format(8, true), s.data(), z.data()),
      ao::Error);
  EXPECT_THROW(
      int4_row_quantize_zp(x.data(), DType::f32, 2, 32, 0, nullptr, nullptr, nullptr, DType::f32),
      ao::Error);
}

// The AVX2 segment kernels against the scalar reference on random and edge inputs.
TEST(FormatAffine, SimdEqualsScalar) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t len = 4099;
  std::vector<float> x(len);
  for (auto& v : x) v = nd(rng) * 10.0f;
  x[0] = 0.5f, x[1] = -0.5f, x[2] = 1.5f, x[3] = 2.5f, x[4] = 1e30f, x[5] = -1e30f;
  std::vector<uint8_t> a(len), b(len);
  std::vector<float> da(len), db(len);
  for (bool bf16 : {false, true})
    for (bool sgn : {false, true})
      for (bool has_zp : {false, true}) {
        detail::AffineSegment s{bf16 ? round_to_bf16(1.0f / 0.37f) : 1.0f / 0.37f,
                                has_zp ? 3.0f : 0.0f,
                                has_zp,
                                sgn ? -128.0f : 0.0f,
                                sgn ? 127.0f : 255.0f,
                                bf16,
                                sgn};
        detail::quantize_affine_segment_ref(s, x.data(), len, a.data());
        if (formats_use_avx2())
          detail::quantize_affine_segment_avx2(s, x.data(), len, b.data());
        else
          b = a;
        EXPECT_TRUE(same_vec(a, b)) << bf16 << sgn << has_zp;
        detail::dequantize_affine_segment_ref(a.data(), sgn, s.zp, 0.37f, len, da.data());
        if (formats_use_avx2())
          detail::dequantize_affine_segment_avx2(a.data(), sgn, s.zp, 0.37f, len, db.data());
        else
          db = da;
        EXPECT_TRUE(same_vec(da, db));
      }
}

}  // namespace
}  // namespace ao::formats

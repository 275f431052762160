// Float8 scaling (inference amax/max and training max/amax conventions) against TorchAO.
#include "ao/core/error.h"
#include "ao/formats/float8_scaling.h"
#include "formats/fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

DType dt(const std::string& s) { return s == "bf16" ? DType::bf16 : DType::f32; }
FloatFormat f8(const std::string& s) {
  return s == "e5m2" ? FloatFormat::f8_e5m2 : FloatFormat::f8_e4m3fn;
}

TEST(FormatFloat8, MatchesTorchAO) {
  const Fixture fx("float8.safetensors");
  int inference = 0, training = 0;
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    SCOPED_TRACE(c.dump());
    const std::string xn =
        std::string(c["input"] == "big" ? "xb_" : "xs_") + c["dtype"].get<std::string>();
    const auto x = fx.bytes(xn);
    const DType xd = dt(c["dtype"]);
    const int64_t n = fx.shape(xn)[0], k = fx.shape(xn)[1];
    const Block block{c["block"][0].get<int64_t>(), c["block"][1].get<int64_t>()};
    const FloatFormat f = f8(c["fp8"]);
    std::vector<float> scale(check_block(n, k, block, "test"));
    std::vector<uint8_t> q(n * k);
    if (c["kind"] == "inference") {
      float8_choose_scale(x.data(), xd, n, k, block, f, scale.data());
      EXPECT_TRUE(same_vec(scale, fx.get<float>(key + ".scale")));
      float8_quantize(x.data(), xd, n, k, block, f, scale.data(), q.data());
      EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
      if (fx.has(key + ".dq")) {
        std::vector<uint8_t> out(n * k * (xd == DType::bf16 ? 2 : 4));
        float8_dequantize(q.data(), n, k, block, f, scale.data(), out.data(), xd);
        EXPECT_TRUE(same_vec(out, fx.bytes(key + ".dq")));
      }
      ++inference;
    } else {
      float8_training_scale(x.data(), xd, n, k, block, f, c["pow2"], scale.data());
      EXPECT_TRUE(same_vec(scale, fx.get<float>(key + ".scale")));
      float8_training_quantize(x.data(), xd, n, k, block, f, scale.data(), q.data());
      EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
      std::vector<float> out(n * k);
      float8_training_dequantize(q.data(), n, k, block, f, scale.data(), out.data(), DType::f32);
      EXPECT_TRUE(same_vec(out, fx.get<float>(key + ".dq")));
      ++training;
    }
  }
  EXPECT_EQ(inference, 12);
  EXPECT_EQ(training, 8);
}

TEST(FormatFloat8, AmaxToScaleEdgeCases) {
  const Fixture fx("float8.safetensors");
  const auto amax = fx.get<float>("amax");
  for (const char* name : {"e4m3fn", "e5m2"})
    for (bool pow2 : {false, true}) {
      std::vector<float> ours(amax.size());
      for (size_t i = 0; i < amax.size(); ++i)
        ours[i] = float8_training_scale_from_amax(amax[i], f8(name), pow2);
      EXPECT_TRUE(
          same_vec(ours, fx.get<float>(std::string("amax_scale_") + name + (pow2 ? "_pow2" : ""))))
          << name << " pow2=" << pow2;
    }
}

TEST(FormatFloat8, AllZeroRowAndBadArguments) {
  // Inference convention: an all-zero row has scale 0 and TorchAO yields NaN codes (0/0).
  std::vector<float> x(2 * 16, 0.0f);
  for (int j = 0; j < 16; ++j) x[16 + j] = static_cast<float>(j);
  float scale[2];
  uint8_t q[32];
  float8_choose_scale(x.data(), DType::f32, 2, 16, Block::per_row(16), FloatFormat::f8_e4m3fn,
                      scale);
  EXPECT_EQ(scale[0], 0.0f);
  float8_quantize(x.data(), DType::f32, 2, 16, Block::per_row(16), FloatFormat::f8_e4m3fn, scale,
                  q);
  EXPECT_EQ(q[0] & 0x7F, 0x7F);  // NaN (x86 0/0 is the negative default NaN: 0xFF)
  EXPECT_EQ(q[31], 0x7E);        // 15 / (15/448) = 448
  // hp_value_lb avoids it
  float8_choose_scale(x.data(), DType::f32, 2, 16, Block::per_row(16), FloatFormat::f8_e4m3fn,
                      scale, AmaxBounds{1e-12f, std::nullopt});
  float8_quantize(x.data(), DType::f32, 2, 16, Block::per_row(16), FloatFormat::f8_e4m3fn, scale,
                  q);
  EXPECT_EQ(q[0], 0x00);
  EXPECT_THROW(float8_choose_scale(x.data(), DType::f32, 2, 16, Block{1, 128},
                                   FloatFormat::f8_e4m3fn, scale),
               ao::Error);
  EXPECT_THROW(float8_choose_scale(x.data(), DType::f32, 2, 16, Block::per_row(16),
                                   FloatFormat::f4_e2m1, scale),
               ao::Error);
}

}  // namespace
}  // namespace ao::formats

// MX (block 32, four E8M0 scale modes), NVFP4 (block 16, e4m3 scales, optional per-tensor
// scale) and the cuBLAS blocked scale swizzle against TorchAO fixtures.
#include <algorithm>
#include <cmath>
#include <optional>

#include "ao/core/error.h"
#include "ao/formats/mx.h"
#include "formats/fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

ScaleMode mode_from(const std::string& s) {
  if (s == "FLOOR") return ScaleMode::floor;
  if (s == "CEIL") return ScaleMode::ceil;
  if (s == "EVEN") return ScaleMode::even;
  return ScaleMode::rceil;
}
FloatFormat elem_from(const std::string& s) {
  if (s == "e4m3fn") return FloatFormat::f8_e4m3fn;
  if (s == "e5m2") return FloatFormat::f8_e5m2;
  if (s == "e2m3") return FloatFormat::f6_e2m3;
  if (s == "e3m2") return FloatFormat::f6_e3m2;
  return FloatFormat::f4_e2m1;
}

TEST(FormatMx, MatchesTorchAO) {
  const Fixture fx("mx.safetensors");
  int quant = 0, deq = 0, blocked = 0;
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    SCOPED_TRACE(key);
    if (c.contains("kind") && c["kind"] == "swizzled") {  // to_mx(..., is_swizzled_scales=True)
      const int64_t n = c["rows"], k = c["cols"];
      const FloatFormat elem = elem_from(c["elem"]);
      const auto x = fx.bytes("x_swz");
      std::vector<uint8_t> q(mx_qdata_bytes(elem, n, k)), s(n * k / 32),
          b(blocked_scale_bytes(n, k / 32));
      mx_quantize(x.data(), DType::bf16, n, k, elem, ScaleMode::rceil, q.data(), s.data());
      to_blocked(s.data(), n, k / 32, b.data());
      EXPECT_TRUE(same_vec(b, fx.bytes(key + ".scale")));
      EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
      ++blocked;
      continue;
    }
    if (c.contains("kind")) {  // to_blocked / from_blocked
      const int64_t rows = c["rows"], cols = c["cols"];
      const auto in = fx.bytes(key + ".in");
      std::vector<uint8_t> b(blocked_scale_bytes(rows, cols)), back(rows * cols);
      to_blocked(in.data(), rows, cols, b.data());
      EXPECT_TRUE(same_vec(b, fx.bytes(key + ".out")));
      from_blocked(b.data(), rows, cols, back.data());
      EXPECT_TRUE(same_vec(back, fx.bytes(key + ".back")));
      ++blocked;
      continue;
    }
    const std::string d = c["dtype"];
    const FloatFormat elem = elem_from(c["elem"]);
    const ScaleMode mode = mode_from(c["mode"]);
    std::vector<uint8_t> x;
    DType xd = d == "bf16" ? DType::bf16 : DType::f32;
    int64_t n = c["shape"][0], k = c["shape"][1];
    if (d == "adv") {  // one row of x_adv per element format, viewed as [4, K/4]
      const auto all = fx.bytes("x_adv");
      const int64_t row_bytes = n * k * 4;
      const std::vector<std::string> order{"e4m3fn", "e5m2", "e2m3", "e3m2", "e2m1"};
      const int64_t idx =
          std::find(order.begin(), order.end(), c["elem"].get<std::string>()) - order.begin();
      x.assign(all.begin() + idx * row_bytes, all.begin() + (idx + 1) * row_bytes);
    } else {
      x = fx.bytes("x_" + d);
    }
    std::vector<uint8_t> q(mx_qdata_bytes(elem, n, k)), s(n * k / 32);
    mx_quantize(x.data(), xd, n, k, elem, mode, q.data(), s.data());
    EXPECT_TRUE(same_vec(s, fx.bytes(key + ".scale")));
    EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
    ++quant;
    if (fx.has(key + ".dq")) {
      std::vector<float> out(n * k);
      mx_dequantize(q.data(), s.data(), n, k, elem, out.data(), DType::f32);
      EXPECT_TRUE(same_vec(out, fx.get<float>(key + ".dq")));
      std::vector<uint16_t> out16(n * k);
      mx_dequantize(q.data(), s.data(), n, k, elem, out16.data(), DType::bf16);
      EXPECT_TRUE(same_vec(out16, fx.get<uint16_t>(key + ".dq_bf16")));
      ++deq;
    }
  }
  EXPECT_EQ(quant, 60);
  EXPECT_EQ(deq, 10);
  EXPECT_EQ(blocked, 6);
}

TEST(FormatNvfp4, MatchesTorchAO) {
  const Fixture fx("nvfp4.safetensors");
  int checked = 0;
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    SCOPED_TRACE(key);
    const std::string xn = c["input"].get<std::string>() + "_" + c["dtype"].get<std::string>();
    const auto x = fx.bytes(xn);
    const DType xd = c["dtype"] == "bf16" ? DType::bf16 : DType::f32;
    const int64_t n = fx.shape(xn)[0], k = fx.shape(xn)[1];
    std::optional<float> pts;
    if (c["per_tensor_scale"].get<bool>()) {
      float amax = 0;
      for (int64_t i = 0; i < n * k; ++i) {
        float v;
        if (xd == DType::f32)
          std::memcpy(&v, x.data() + 4 * i, 4);
        else
          v = bf16_bits_to_f32(static_cast<uint16_t>(x[2 * i] | (x[2 * i + 1] << 8)));
        amax = std::max(amax, std::fabs(v));
      }
      pts = nvfp4_per_tensor_scale(amax);
      EXPECT_EQ(*pts, fx.get<float>(key + ".pts")[0]);
    }
    std::vector<uint8_t> q(n * k / 2), s(n * k / 16);
    nvfp4_quantize(x.data(), xd, n, k, pts ? &*pts : nullptr, q.data(), s.data());
    EXPECT_TRUE(same_vec(s, fx.bytes(key + ".scale")));
    EXPECT_TRUE(same_vec(q, fx.bytes(key + ".q")));
    std::vector<float> out(n * k);
    nvfp4_dequantize(q.data(), s.data(), n, k, pts ? &*pts : nullptr, out.data(), DType::f32);
    EXPECT_TRUE(same_vec(out, fx.get<float>(key + ".dq")));
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST(FormatMx, ScaleModesByHand) {
  // amax 6.0 with fp4 (emax 2): FLOOR 2^(2-2) -> 127; amax 7: CEIL rounds up -> 128.
  EXPECT_EQ(mx_scale_from_amax(6.0f, FloatFormat::f4_e2m1, ScaleMode::floor), 127);
  EXPECT_EQ(mx_scale_from_amax(7.0f, FloatFormat::f4_e2m1, ScaleMode::ceil), 128);
  EXPECT_EQ(mx_scale_from_amax(7.9f, FloatFormat::f4_e2m1, ScaleMode::even), 128);
  EXPECT_EQ(mx_scale_from_amax(6.0f, FloatFormat::f4_e2m1, ScaleMode::rceil), 127);
  EXPECT_EQ(mx_scale_from_amax(6.1f, FloatFormat::f4_e2m1, ScaleMode::rceil), 128);
  EXPECT_EQ(mx_scale_from_amax(0.0f, FloatFormat::f8_e4m3fn, ScaleMode::floor), 0);
  EXPECT_EQ(mx_scale_from_amax(NAN, FloatFormat::f8_e4m3fn, ScaleMode::floor), 255);
  EXPECT_EQ(mx_scale_from_amax(INFINITY, FloatFormat::f8_e4m3fn, ScaleMode::rceil), 254);
}

TEST(FormatMx, BadArguments) {
  std::vector<float> x(64);
  std::vector<uint8_t> q(64), s(4);
  EXPECT_THROW(mx_quantize(x.data(), DType::f32, 2, 30, FloatFormat::f8_e4m3fn, ScaleMode::floor,
                           q.data(), s.data()),
               ao::Error);
  EXPECT_THROW(mx_quantize(x.data(), DType::f32, 2, 32, FloatFormat::e8m0, ScaleMode::floor,
                           q.data(), s.data()),
               ao::Error);
  EXPECT_THROW(mx_quantize(x.data(), DType::f32, 1, 64, FloatFormat::f8_e4m3fn, ScaleMode::floor,
                           q.data(), s.data(), 0),
               ao::Error);
  EXPECT_THROW(nvfp4_quantize(x.data(), DType::f32, 2, 24, nullptr, q.data(), s.data()), ao::Error);
  EXPECT_THROW(to_blocked(q.data(), 0, 4, s.data()), ao::Error);
}

}  // namespace
}  // namespace ao::formats

#include "ao/formats/block_formats.h"

namespace ao::formats {
namespace {

// The traits table drives every block format the same way; round trips keep TorchAO's SQNR
// thresholds (MX e4m3 >= 18 dB, others >= 13 dB) on normal data.
TEST(FormatBlockTable, RoundTripEveryRow) {
  const int64_t n = 16, k = 256;
  std::vector<float> x(n * k);
  uint32_t state = 12345;
  for (auto& v : x) {  // Box-Muller on a tiny LCG: deterministic normal-ish data
    state = state * 1664525u + 1013904223u;
    const float u1 = ((state >> 8) + 1) / 16777217.0f;
    state = state * 1664525u + 1013904223u;
    const float u2 = (state >> 8) / 16777216.0f;
    v = std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
  }
  for (int i = 0; i < static_cast<int>(BlockFormat::count_); ++i) {
    const auto& f = block_format_info(static_cast<BlockFormat>(i));
    EXPECT_EQ(block_format_from_name(f.name), f.format);
    std::vector<uint8_t> q(block_qdata_bytes(f, n, k)), s(block_scale_count(f, n, k));
    std::vector<float> y(n * k);
    BlockQuantOptions opt;
    f.quantize(x.data(), DType::f32, n, k, q.data(), s.data(), opt);
    f.dequantize(q.data(), s.data(), n, k, y.data(), DType::f32, opt);
    double sig = 0, err = 0;
    for (int64_t j = 0; j < n * k; ++j) {
      sig += double(x[j]) * x[j];
      err += double(x[j] - y[j]) * (x[j] - y[j]);
    }
    const double sqnr = 10 * std::log10(sig / err);
    EXPECT_GE(sqnr, f.format == BlockFormat::mxfp8_e4m3 ? 18.0 : 13.0) << f.name;
  }
  EXPECT_THROW(block_format_from_name("mxfp3"), ao::Error);
}

}  // namespace
}  // namespace ao::formats

// Element formats: every code decodes as PyTorch/TorchAO does, a large float32 sweep with
// every boundary encodes as they do, and the AVX2 bulk paths equal the scalar reference.
#include <algorithm>
#include <cmath>
#include <random>

#include "ao/core/error.h"
#include "ao/formats/float_formats.h"
#include "formats/fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

struct Named {
  FloatFormat f;
  const char* key;  // fixture tensor name
  int ncodes;
};
const Named kAll[] = {{FloatFormat::f8_e4m3fn, "e4m3fn", 256}, {FloatFormat::f8_e5m2, "e5m2", 256},
                      {FloatFormat::f6_e2m3, "e2m3", 64},      {FloatFormat::f6_e3m2, "e3m2", 64},
                      {FloatFormat::f4_e2m1, "e2m1", 16},      {FloatFormat::e8m0, "e8m0", 256}};

const Fixture& casts() {
  static const Fixture f("float_casts.safetensors");
  return f;
}

TEST(FormatFloat, TraitsTable) {
  for (const auto& n : kAll) {
    const auto& info = float_format_info(n.f);
    EXPECT_EQ(info.format, n.f);
    EXPECT_EQ(float_format_from_name(info.name), n.f);
    EXPECT_EQ(1 << info.bits, n.ncodes);
    if (n.f != FloatFormat::e8m0) {
      EXPECT_EQ(info.decode(info.encode(info.max_value)), info.max_value) << info.name;
      EXPECT_EQ(std::ldexp(1.0f, info.max_pow2), std::exp2(std::floor(std::log2(info.max_value))));
    }
  }
  EXPECT_THROW(float_format_from_name("f5_e2m2"), ao::Error);
}

TEST(FormatFloat, DecodeEveryCodeMatchesTorch) {
  for (const auto& n : kAll) {
    const auto ref = casts().get<uint32_t>(std::string("decode_") + n.key);
    ASSERT_EQ(static_cast<int>(ref.size()), n.ncodes);
    std::vector<uint32_t> ours(n.ncodes);
    for (int c = 0; c < n.ncodes; ++c) {
      const float v = decode(n.f, static_cast<uint8_t>(c));
      std::memcpy(&ours[c], &v, 4);
    }
    EXPECT_TRUE(same_vec(ours, ref)) << n.key;
  }
}

TEST(FormatFloat, EncodeEveryCodeRoundTrips) {
  for (const auto& n : kAll) {
    const auto& info = float_format_info(n.f);
    for (int c = 0; c < n.ncodes; ++c) {
      const float v = info.decode(static_cast<uint8_t>(c));
      if (std::isnan(v)) continue;
      const uint8_t back = info.encode(v);
      if (n.f == FloatFormat::e8m0) {
        EXPECT_EQ(back, c) << info.name;
      } else {
        EXPECT_EQ(info.decode(back), v) << info.name << " code " << c;  // +-0 both decode alike
        EXPECT_EQ(std::signbit(info.decode(back)), std::signbit(v));
      }
    }
  }
}

TEST(FormatFloat, EncodeSweepMatchesTorch) {
  const auto x = casts().get<float>("x");
  ASSERT_GT(x.size(), 10000u);
  std::vector<uint8_t> ours(x.size());
  for (const auto& n : kAll) {
    const auto& info = float_format_info(n.f);
    for (size_t i = 0; i < x.size(); ++i) ours[i] = info.encode(x[i]);
    EXPECT_TRUE(same_vec(ours, casts().bytes(n.key))) << n.key;
  }
  const std::pair<FloatFormat, const char*> sat[] = {{FloatFormat::f8_e4m3fn, "e4m3fn_sat"},
                                                     {FloatFormat::f8_e5m2, "e5m2_sat"}};
  for (const auto& [f, key] : sat) {
    for (size_t i = 0; i < x.size(); ++i) ours[i] = encode(f, x[i], /*saturate=*/true);
    EXPECT_TRUE(same_vec(ours, casts().bytes(key))) << key;
  }
}

TEST(FormatFloat, SpecialValues) {
  const float nan = std::nanf(""), inf = INFINITY;
  EXPECT_EQ(f32_to_f8_e4m3fn(nan), 0x7F);
  EXPECT_EQ(f32_to_f8_e4m3fn(-nan), 0xFF);
  EXPECT_EQ(f32_to_f8_e4m3fn(inf), 0x7F);     // PyTorch's cast: overflow -> NaN
  EXPECT_EQ(f32_to_f8_e4m3fn(464.0f), 0x7E);  // halfway 448/480 rounds to even (448)
  EXPECT_EQ(encode(FloatFormat::f8_e4m3fn, 1e9f, true), 0x7E);
  EXPECT_EQ(f32_to_f8_e5m2(inf), 0x7C);
  EXPECT_EQ(f32_to_f8_e5m2(-inf), 0xFC);
  EXPECT_EQ(f32_to_f8_e5m2(nan), 0x7F);
  EXPECT_EQ(f32_to_f4_e2m1(inf), 0x07);  // fp4/fp6 saturate
  EXPECT_EQ(f32_to_f4_e2m1(-100.0f), 0x0F);
  EXPECT_EQ(f32_to_f4_e2m1(0.25f), 0x00);  // halfway 0/0.5 -> even (0)
  EXPECT_EQ(f32_to_f4_e2m1(0.75f), 0x02);  // halfway 0.5/1 -> even (1.0)
  EXPECT_EQ(f32_to_f6_e2m3(7.75f), 0x1F);
  EXPECT_EQ(f32_to_e8m0(1.0f), 127);
  EXPECT_EQ(f32_to_e8m0(inf), 255);
  EXPECT_EQ(f32_to_e8m0(1.5f), 128);  // ties to even on the exponent
  EXPECT_TRUE(std::isnan(e8m0_to_f32(255)));
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));
}

// An oracle independent of the bit tricks: the nearest representable value with ties to
// the even code; PyTorch's fp8 overflow modelled as one virtual code above max (e4m3fn:
// 480 -> NaN 0x7F, e5m2: 65536 -> Inf 0x7C); fp6/fp4 saturate. Checked on ~2M float32 bit
// patterns spread over the whole range.
using Grid = std::vector<std::pair<float, uint8_t>>;
Grid oracle_grid(FloatFormat f) {
  const auto& info = float_format_info(f);
  Grid grid;
  for (int c = 0; c < (1 << (info.bits - 1)); ++c) {
    const float v = info.decode(static_cast<uint8_t>(c));
    if (std::isfinite(v)) grid.emplace_back(v, static_cast<uint8_t>(c));
  }
  if (f == FloatFormat::f8_e4m3fn) grid.emplace_back(480.0f, 0x7F);
  if (f == FloatFormat::f8_e5m2) grid.emplace_back(65536.0f, 0x7C);
  return grid;
}

uint8_t oracle_encode(const Grid& grid, int bits, float x) {
  const uint8_t sign = std::signbit(x) ? static_cast<uint8_t>(1u << (bits - 1)) : 0;
  float a = std::fabs(x);
  if (a > grid.back().first) a = grid.back().first;
  auto hi = std::lower_bound(grid.begin(), grid.end(), std::make_pair(a, uint8_t{0}),
                             [](const auto& p, const auto& q) { return p.first < q.first; });
  if (hi == grid.begin()) return hi->second | sign;
  const auto lo = hi - 1;
  const double dl = double(a) - lo->first, dh = double(hi->first) - a;
  const uint8_t code = dl < dh   ? lo->second
                       : dh < dl ? hi->second
                                 : ((lo->second & 1) ? hi->second : lo->second);
  return code | sign;
}

TEST(FormatFloat, EncodeMatchesNearestValueOracle) {
  for (FloatFormat f : {FloatFormat::f8_e4m3fn, FloatFormat::f8_e5m2, FloatFormat::f6_e2m3,
                        FloatFormat::f6_e3m2, FloatFormat::f4_e2m1}) {
    const auto& info = float_format_info(f);
    const Grid grid = oracle_grid(f);
    int64_t bad = 0, checked = 0;
    for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 2039) {
      float x;
      const uint32_t b = static_cast<uint32_t>(u);
      std::memcpy(&x, &b, 4);
      if (std::isnan(x)) continue;
      ++checked;
      const uint8_t want = oracle_encode(grid, info.bits, x);
      if (info.encode(x) != want && bad++ < 3)
        ADD_FAILURE() << info.name << " x=" << x << " ours " << int(info.encode(x)) << " oracle "
                      << int(want);
    }
    EXPECT_EQ(bad, 0) << info.name;
    EXPECT_GT(checked, 2000000);
  }
}

// Inputs that exercise every branch: the fixture sweep plus random bit patterns.
std::vector<float> edge_and_random(size_t n_random) {
  std::vector<float> v = casts().get<float>("x");
  std::mt19937 rng(5);
  for (size_t i = 0; i < n_random; ++i) {
    uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
    v.push_back(std::ldexp(static_cast<float>(rng() % 100000) / 1000.0f - 50.0f,
                           static_cast<int>(rng() % 40) - 20));
  }
  return v;
}

TEST(FormatFloat, BulkEqualsScalar) {
  const auto x = edge_and_random(200000);
  std::vector<uint8_t> ref(x.size()), fast(x.size());
  std::vector<float> dref(x.size()), dfast(x.size());
  for (const auto& n : kAll) {
    const auto& info = float_format_info(n.f);
    for (bool sat : {false, true}) {
      info.encode_bulk_ref(x.data(), ref.data(), static_cast<int64_t>(x.size()), sat);
      info.encode_bulk(x.data(), fast.data(), static_cast<int64_t>(x.size()), sat);
      EXPECT_TRUE(same_vec(fast, ref)) << info.name << " saturate=" << sat;
    }
    std::vector<uint8_t> every(1024);
    for (size_t i = 0; i < every.size(); ++i) every[i] = static_cast<uint8_t>(i * 7);
    std::vector<float> e1(every.size()), e2(every.size());
    info.decode_bulk_ref(every.data(), e1.data(), static_cast<int64_t>(every.size()));
    info.decode_bulk(every.data(), e2.data(), static_cast<int64_t>(every.size()));
    EXPECT_TRUE(same_vec(e2, e1)) << info.name << " (every byte value)";
    info.decode_bulk_ref(ref.data(), dref.data(), static_cast<int64_t>(ref.size()));
    info.decode_bulk(ref.data(), dfast.data(), static_cast<int64_t>(ref.size()));
    EXPECT_TRUE(same_vec(dfast, dref)) << info.name;
  }
}

}  // namespace
}  // namespace ao::formats

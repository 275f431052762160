// HQQ int4 qparams against TorchAO 0.18 itself: on the CPU (hqq.safetensors, from
// scripts/fixtures/make_hqq_fixtures.py) and on an H200 (hqq_cuda.safetensors, from
// scripts/fixtures/make_tile_pack_fixtures.py), including the complete
// Int4TilePackedTo4dTensor (qdata + scale_and_zero) for the hqq and tinygemm algorithms.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/formats/affine.h"
#include "ao/formats/float_formats.h"
#include "ao/formats/hqq.h"
#include "ao/formats/int4_tile_pack.h"
#include "ao/formats/packing.h"
#include "fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = f32_to_bf16_rne(v[i]);
  return o;
}
std::vector<uint32_t> bits(const std::vector<float>& v) {
  std::vector<uint32_t> o(v.size());
  std::memcpy(o.data(), v.data(), v.size() * 4);
  return o;
}

TEST(FormatHqq, MatchesTorchAoOnCpu) {
  Fixture fx("hqq.safetensors");
  int checked = 0;
  for (const auto& c : fx.cases()) {
    const std::string name = c.at("name"), input = c.at("input");
    const int64_t g = c.at("group_size");
    SCOPED_TRACE(name);
    const Shape shape = fx.shape(input);
    const int64_t n = shape[0], k = shape[1];
    const DType dt = fx.dtype(input);
    const auto x = fx.bytes(input);
    std::vector<uint8_t> q(n * k);
    std::vector<float> scale(n * k / g), zero(n * k / g);
    const HqqStats st = hqq_quantize_int4(x.data(), dt, n, k, g, q.data(), scale.data(),
                                          zero.data(), {.backend = HqqBackend::cpu});
    EXPECT_EQ(st.iterations, c.at("iterations").get<int>());
    const auto errors = c.at("errors");
    if (!errors.empty()) EXPECT_EQ(st.last_error, errors.back().get<double>());
    std::vector<uint8_t> packed(n * k / 2);
    pack_nibbles_low_first(q.data(), n * k, packed.data());
    EXPECT_TRUE(same_vec(packed, fx.bytes(name + ".q")));
    if (dt == DType::bf16) {
      EXPECT_TRUE(same_vec(to_bf16(scale), fx.get<uint16_t>(name + ".scale")));
      EXPECT_TRUE(same_vec(to_bf16(zero), fx.get<uint16_t>(name + ".zero")));
    } else {
      EXPECT_TRUE(same_vec(bits(scale), fx.get<uint32_t>(name + ".scale")));
      EXPECT_TRUE(same_vec(bits(zero), fx.get<uint32_t>(name + ".zero")));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

// Larger comparison against a file from `make_hqq_fixtures.py --stress FILE` (not committed):
// AO_HQQ_STRESS=FILE ./ao_tests --gtest_filter=FormatHqq.Stress. Prints mismatch counts;
// requires exact q, scale, zero and iteration counts.
TEST(FormatHqq, Stress) {
  const char* path = std::getenv("AO_HQQ_STRESS");
  if (!path) GTEST_SKIP() << "set AO_HQQ_STRESS to a file from make_hqq_fixtures.py --stress";
  auto f = io::SafetensorsFile::open(path);
  const auto cases = nlohmann::json::parse(f.metadata().at("cases"));
  int64_t q_bad = 0, q_all = 0, sz_bad = 0, sz_all = 0, it_bad = 0;
  for (const auto& c : cases) {
    const std::string name = c.at("name"), input = c.at("input");
    const int64_t g = c.at("group_size");
    const Shape shape = f.entry(input).shape;
    const int64_t n = shape[0], k = shape[1];
    const DType dt = f.entry(input).dtype;
    Tensor x = f.tensor(input);
    std::vector<uint8_t> q(n * k);
    std::vector<float> scale(n * k / g), zero(n * k / g);
    const HqqStats st =
        hqq_quantize_int4(x.data_ptr(), dt, n, k, g, q.data(), scale.data(), zero.data());
    std::vector<uint8_t> packed(n * k / 2);
    pack_nibbles_low_first(q.data(), n * k, packed.data());
    Tensor rq = f.tensor(name + ".q"), rs = f.tensor(name + ".scale"),
           rz = f.tensor(name + ".zero");
    int64_t qb = 0, sb = 0;
    const auto* pq = static_cast<const uint8_t*>(rq.data_ptr());
    for (int64_t i = 0; i < n * k / 2; ++i) qb += (packed[i] & 15) != (pq[i] & 15);
    for (int64_t i = 0; i < n * k / 2; ++i) qb += (packed[i] >> 4) != (pq[i] >> 4);
    for (int64_t i = 0; i < n * k / g; ++i) {
      if (dt == DType::bf16) {
        const auto* s16 = static_cast<const uint16_t*>(rs.data_ptr());
        const auto* z16 = static_cast<const uint16_t*>(rz.data_ptr());
        sb += f32_to_bf16_rne(scale[i]) != s16[i];
        sb += f32_to_bf16_rne(zero[i]) != z16[i];
      } else {
        sb += std::memcmp(&scale[i], static_cast<const float*>(rs.data_ptr()) + i, 4) != 0;
        sb += std::memcmp(&zero[i], static_cast<const float*>(rz.data_ptr()) + i, 4) != 0;
      }
    }
    const bool itb = st.iterations != c.at("iterations").get<int>();
    std::printf("%-16s q %lld/%lld  scale+zero %lld/%lld  iterations %d vs %d\n", name.c_str(),
                static_cast<long long>(qb), static_cast<long long>(n * k),
                static_cast<long long>(sb), static_cast<long long>(2 * n * k / g), st.iterations,
                c.at("iterations").get<int>());
    q_bad += qb, q_all += n * k, sz_bad += sb, sz_all += 2 * n * k / g, it_bad += itb;
  }
  EXPECT_EQ(q_bad, 0) << "of " << q_all;
  EXPECT_EQ(sz_bad, 0) << "of " << sz_all;
  EXPECT_EQ(it_bad, 0);
}

// TorchAO on a CUDA tensor (fp16 optimizer): q, scale, zero of the raw HQQ call and the whole
// Int4TilePackedTo4dTensor from_hp output (tile-packed qdata, interleaved scale_and_zero).
TEST(FormatHqq, MatchesTorchAoOnCuda) {
  Fixture fx("hqq_cuda.safetensors");
  const int64_t n = 16, k = 1024;
  ASSERT_EQ(fx.shape("w"), (Shape{n, k}));
  const auto w = fx.bytes("w");
  {
    SCOPED_TRACE("hqq_g64");
    const int64_t g = 64;
    std::vector<uint8_t> q(n * k);
    std::vector<float> scale(n * k / g), zero(n * k / g);
    hqq_quantize_int4(w.data(), DType::bf16, n, k, g, q.data(), scale.data(), zero.data(),
                      {.backend = HqqBackend::cuda});
    EXPECT_TRUE(same_vec(q, fx.bytes("hqq_g64.q")));
    EXPECT_TRUE(same_vec(to_bf16(scale), fx.get<uint16_t>("hqq_g64.scale")));
    EXPECT_TRUE(same_vec(to_bf16(zero), fx.get<uint16_t>("hqq_g64.zero")));
  }
  for (const char* alg : {"hqq", "tinygemm"}) {
    SCOPED_TRACE(alg);
    const int64_t g = 128, groups = k / g;
    std::vector<uint8_t> q(n * k);
    std::vector<float> scale(n * groups), zero(n * groups);
    if (std::string(alg) == "hqq") {
      hqq_quantize_int4(w.data(), DType::bf16, n, k, g, q.data(), scale.data(), zero.data(),
                        {.backend = HqqBackend::cuda});
    } else {
      const IntFormat u4 = int_format(4, false);
      choose_qparams_affine_tinygemm(w.data(), DType::bf16, n, k, Block::per_group(g), u4,
                                     scale.data(), zero.data());
      quantize_affine_tinygemm(w.data(), DType::bf16, n, k, Block::per_group(g), scale.data(),
                               zero.data(), DType::bf16, u4, q.data());
    }
    const std::string pre = std::string("e2e_") + alg + "_g128";
    const auto shape = int4_tile_packed_shape(n, k, 8);
    EXPECT_EQ(fx.shape(pre + ".qdata"), (Shape{shape[0], shape[1], shape[2], shape[3]}));
    std::vector<int32_t> qdata(n * k / 8);
    int4_tile_pack(q.data(), n, k, 8, qdata.data());
    EXPECT_TRUE(same_vec(qdata, fx.get<int32_t>(pre + ".qdata")));
    EXPECT_EQ(fx.shape(pre + ".scale_and_zero"), (Shape{groups, n, 2}));
    std::vector<uint16_t> sz(groups * n * 2);
    interleave_scale_and_zero_bf16(scale.data(), zero.data(), n, groups, sz.data());
    EXPECT_TRUE(same_vec(sz, fx.get<uint16_t>(pre + ".scale_and_zero")));
    // and back
    std::vector<float> s2(n * groups), z2(n * groups);
    deinterleave_scale_and_zero_bf16(sz.data(), n, groups, s2.data(), z2.data());
    EXPECT_EQ(s2, scale);
    EXPECT_EQ(z2, zero);
  }
}

// HQQ should not be worse than its own round-to-nearest start (optimize=false) in mean
// absolute error of the reconstruction, on weights with outliers.
TEST(FormatHqq, ImprovesOnRoundToNearest) {
  const int64_t n = 8, k = 512, g = 64;
  std::vector<float> w(n * k);
  uint32_t st = 12345;
  for (auto& v : w) {
    st = st * 1664525u + 1013904223u;
    v = (static_cast<float>(st >> 8) / 16777216.0f - 0.5f) * 0.1f;
  }
  for (int64_t i = 0; i < n * k; i += 53) w[i] *= 15.0f;
  auto mae = [&](bool optimize) {
    std::vector<uint8_t> q(n * k);
    std::vector<float> s(n * k / g), z(n * k / g);
    hqq_quantize_int4(w.data(), DType::f32, n, k, g, q.data(), s.data(), z.data(),
                      {.optimize = optimize});
    double e = 0;
    for (int64_t i = 0; i < n * k; ++i) e += std::fabs((q[i] - 8.0f) * s[i / g] + z[i / g] - w[i]);
    return e / (n * k);
  };
  EXPECT_LT(mae(true), mae(false));
}

// Large weights run the groups of a step on threads; the result must not depend on that.
TEST(FormatHqq, ThreadsDoNotChangeResult) {
  const int64_t n = 1024, k = 1024, g = 128;
  std::vector<float> w(n * k);
  uint32_t st = 99;
  for (auto& v : w) {
    st = st * 1664525u + 1013904223u;
    v = (static_cast<float>(st >> 8) / 16777216.0f - 0.5f) * 0.05f;
  }
  const int saved = num_threads();
  auto run = [&](int threads, std::vector<uint8_t>& q, std::vector<float>& s,
                 std::vector<float>& z) {
    set_num_threads(threads);
    q.resize(n * k), s.resize(n * k / g), z.resize(n * k / g);
    return hqq_quantize_int4(w.data(), DType::f32, n, k, g, q.data(), s.data(), z.data(),
                             {.iters = 3});
  };
  std::vector<uint8_t> q1, q2;
  std::vector<float> s1, s2, z1, z2;
  const HqqStats a = run(1, q1, s1, z1), b = run(2, q2, s2, z2);
  set_num_threads(saved);
  EXPECT_EQ(a.iterations, b.iterations);
  EXPECT_EQ(a.last_error, b.last_error);
  EXPECT_EQ(q1, q2);
  EXPECT_TRUE(same_vec(bits(s1), bits(s2)));
  EXPECT_TRUE(same_vec(bits(z1), bits(z2)));
}

TEST(FormatHqq, BadArguments) {
  std::vector<float> w(16 * 256, 0.5f);
  std::vector<uint8_t> q(16 * 256);
  std::vector<float> s(256), z(256);
  EXPECT_THROW(hqq_quantize_int4(w.data(), DType::f32, 16, 256, 48, q.data(), s.data(), z.data()),
               Error);
  EXPECT_THROW(hqq_quantize_int4(w.data(), DType::f32, 16, 256, 1, q.data(), s.data(), z.data()),
               Error);
  EXPECT_THROW(hqq_quantize_int4(w.data(), DType::f32, 0, 256, 32, q.data(), s.data(), z.data()),
               Error);
  EXPECT_THROW(hqq_quantize_int4(w.data(), DType::i32, 16, 256, 32, q.data(), s.data(), z.data()),
               Error);
  EXPECT_THROW(hqq_quantize_int4(w.data(), DType::f32, 16, 256, 32, q.data(), s.data(), z.data(),
                                 {.iters = -1}),
               Error);
  try {
    hqq_quantize_int4(w.data(), DType::f32, 16, 256, 48, q.data(), s.data(), z.data());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group size 48"), std::string::npos) << e.what();
  }
  // A constant weight: scale clamps to 2e4 in hqq terms, q is all 0, dequantization exact.
  hqq_quantize_int4(w.data(), DType::f32, 16, 256, 32, q.data(), s.data(), z.data());
  for (int i = 0; i < 16 * 256; ++i) EXPECT_EQ(q[i], 0);
  EXPECT_FLOAT_EQ((0 - 8.0f) * s[0] + z[0], 0.5f);
}

}  // namespace
}  // namespace ao::formats

// tinygemm int4 layouts: the CUDA tile layout of aten._convert_weight_to_int4pack (fixture
// generated on an H200 by scripts/fixtures/make_tile_pack_fixtures.py), the interleaved
// scale_and_zero, and the ISA-dependent CPU layout of _convert_weight_to_int4pack_for_cpu.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "ao/core/error.h"
#include "ao/formats/int4_tile_pack.h"
#include "fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

uint64_t fnv1a64(const void* p, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

// Same formula as make_tile_pack_fixtures.py formula_q.
std::vector<uint8_t> formula_q(int64_t n, int64_t k) {
  std::vector<uint8_t> q(n * k);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j)
      q[i * k + j] = static_cast<uint8_t>(((i * 131 + j * 29 + ((i * j) >> 3)) ^ (j >> 4)) & 15);
  return q;
}

TEST(FormatTilePack, MatchesCudaConvertWeightToInt4pack) {
  Fixture fx("tile_pack.safetensors");
  int checked = 0;
  for (const auto& c : fx.cases()) {
    const std::string name = c.at("name");
    const int64_t n = c.at("n"), k = c.at("k");
    const int ikt = c.at("inner_k_tiles");
    SCOPED_TRACE(name);
    const auto shape = int4_tile_packed_shape(n, k, ikt);
    EXPECT_EQ(shape[0], n / 8);
    EXPECT_EQ(shape[1], k / (ikt * 16));
    EXPECT_EQ(shape[2], 32);
    EXPECT_EQ(shape[3], ikt / 2);
    std::vector<uint8_t> q =
        c.at("q") == "formula" ? formula_q(n, k) : fx.get<uint8_t>(c.at("q").get<std::string>());
    ASSERT_EQ(q.size(), static_cast<size_t>(n * k));
    std::vector<int32_t> packed(n * k / 8);
    int4_tile_pack(q.data(), n, k, ikt, packed.data());
    if (c.at("q") == "formula") {
      const auto ref = fx.get<int64_t>(name + ".hash");
      EXPECT_EQ(static_cast<int64_t>(fnv1a64(packed.data(), packed.size() * 4)), ref.at(0));
    } else {
      const Shape s = fx.shape(name + ".packed");
      ASSERT_EQ(s.size(), 4u);
      for (int d = 0; d < 4; ++d) EXPECT_EQ(s[d], shape[d]);
      EXPECT_TRUE(same_vec(packed, fx.get<int32_t>(name + ".packed")));
    }
    std::vector<uint8_t> back(n * k, 0xEE);
    int4_tile_unpack(packed.data(), n, k, ikt, back.data());
    EXPECT_TRUE(same_vec(back, q));
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

TEST(FormatTilePack, RoundTripRandom) {
  std::mt19937 rng(7);
  for (int ikt : {2, 4, 8})
    for (int64_t n : {8, 40}) {
      const int64_t k = ikt * 16 * 3;
      std::vector<uint8_t> q(n * k);
      for (auto& v : q) v = rng() & 15;
      std::vector<int32_t> p(n * k / 8);
      int4_tile_pack(q.data(), n, k, ikt, p.data());
      std::vector<uint8_t> back(n * k);
      int4_tile_unpack(p.data(), n, k, ikt, back.data());
      EXPECT_EQ(back, q);
    }
}

TEST(FormatTilePack, BadArguments) {
  std::vector<uint8_t> q(64 * 256);
  std::vector<int32_t> p(64 * 256);
  EXPECT_THROW(int4_tile_pack(q.data(), 12, 256, 8, p.data()), Error);   // N % 8
  EXPECT_THROW(int4_tile_pack(q.data(), 64, 192, 8, p.data()), Error);   // K % 128
  EXPECT_THROW(int4_tile_pack(q.data(), 64, 256, 3, p.data()), Error);   // ikt
  EXPECT_THROW(int4_tile_pack(q.data(), 64, 256, 16, p.data()), Error);  // ikt
  EXPECT_THROW(int4_tile_unpack(p.data(), 64, 48, 2, q.data()), Error);  // K % 32
  EXPECT_THROW(int4_tile_packed_shape(0, 256, 8), Error);
  EXPECT_NO_THROW(int4_tile_packed_shape(8, 32, 2));
  try {
    int4_tile_pack(q.data(), 64, 192, 8, p.data());
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of inner_k_tiles * 16 = 128"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(tinygemm_groups(256, 48), Error);
  EXPECT_THROW(tinygemm_groups(256, 0), Error);
  EXPECT_EQ(tinygemm_groups(256, 64), 4);
}

// pack_tinygemm_scales_and_zeros: [N, G] x 2 -> [G, N, 2]; checked against the tensors
// Int4TilePackedTo4dTensor.from_hp wrote on the GPU (hqq_cuda.safetensors, e2e_* cases), which
// the HQQ test re-derives; here the index mapping on a hand-made example.
TEST(FormatTilePack, ScaleAndZeroInterleave) {
  const int64_t n = 3, groups = 2;
  const float scale[] = {1, 2, 3, 4, 5, 6};  // [n][g]
  const float zero[] = {-1, -2, -3, -4, -5, -6};
  std::vector<float> out(n * groups * 2);
  interleave_scale_and_zero(scale, zero, n, groups, out.data());
  const std::vector<float> want = {1, -1, 3, -3, 5, -5, 2, -2, 4, -4, 6, -6};
  EXPECT_EQ(out, want);
  std::vector<float> s(n * groups), z(n * groups);
  deinterleave_scale_and_zero(out.data(), n, groups, s.data(), z.data());
  EXPECT_EQ(s, std::vector<float>(scale, scale + 6));
  EXPECT_EQ(z, std::vector<float>(zero, zero + 6));
  std::vector<uint16_t> ob(n * groups * 2);
  interleave_scale_and_zero_bf16(scale, zero, n, groups, ob.data());
  EXPECT_EQ(ob[0], 0x3F80);  // 1.0
  EXPECT_EQ(ob[1], 0xBF80);  // -1.0
  EXPECT_EQ(ob[2], 0x4040);  // 3.0 (row 1, group 0)
  std::vector<float> s2(n * groups), z2(n * groups);
  deinterleave_scale_and_zero_bf16(ob.data(), n, groups, s2.data(), z2.data());
  EXPECT_EQ(s2, s);
  EXPECT_EQ(z2, z);
  EXPECT_THROW(interleave_scale_and_zero(scale, zero, 0, 2, out.data()), Error);
}

TEST(FormatTilePack, MatchesCpuConvertWeightToInt4packForCpu) {
  Fixture fx("tile_pack_cpu.safetensors");
  const std::pair<const char*, Int4CpuPackIsa> isas[] = {{"avx512", Int4CpuPackIsa::avx512},
                                                         {"avx2", Int4CpuPackIsa::avx2},
                                                         {"scalar", Int4CpuPackIsa::scalar}};
  int checked = 0;
  for (const auto& sh : fx.cases().at("shapes")) {
    const int64_t n = sh.at(0), k = sh.at(1);
    const std::string qn = "q" + std::to_string(n) + "x" + std::to_string(k);
    const auto q = fx.get<uint8_t>(qn);
    for (const auto& [name, isa] : isas) {
      SCOPED_TRACE(std::string(name) + " " + qn);
      std::vector<uint8_t> p(n * k / 2);
      int4_cpu_pack(q.data(), n, k, isa, p.data());
      EXPECT_TRUE(same_vec(p, fx.get<uint8_t>(std::string(name) + "." + qn)));
      std::vector<uint8_t> back(n * k);
      int4_cpu_unpack(p.data(), n, k, isa, back.data());
      EXPECT_EQ(back, q);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 15);
  std::vector<uint8_t> q(8 * 16), p(64);
  EXPECT_THROW(int4_cpu_pack(q.data(), 8, 16, Int4CpuPackIsa::avx2, p.data()), Error);  // N % 16
  EXPECT_THROW(int4_cpu_pack(q.data(), 16, 7, Int4CpuPackIsa::avx2, p.data()), Error);  // K odd
  (void)int4_cpu_pack_isa_native();
}

}  // namespace
}  // namespace ao::formats

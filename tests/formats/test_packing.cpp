// Bit packing against TorchAO (pack_uint4, mslk pack_int4, tinygemm pre-pack byte,
// uintx pack_cpu) plus round trips for every layout.
#include <random>

#include "ao/core/error.h"
#include "ao/formats/packing.h"
#include "formats/fixture_util.h"

namespace ao::formats {
namespace {

using testing::Fixture;
using testing::same_vec;

TEST(FormatPacking, MatchesTorchAO) {
  const Fixture fx("packing.safetensors");
  const auto u4 = fx.bytes("u4");
  std::vector<uint8_t> p(u4.size() / 2), back(u4.size());
  pack_nibbles_low_first(u4.data(), static_cast<int64_t>(u4.size()), p.data());
  EXPECT_TRUE(same_vec(p, fx.bytes("u4.pack_uint4")));
  unpack_nibbles_low_first(p.data(), static_cast<int64_t>(u4.size()), back.data());
  EXPECT_TRUE(same_vec(back, u4));

  const auto i4 = fx.get<int8_t>("i4");
  pack_nibbles_low_first(reinterpret_cast<const uint8_t*>(i4.data()),
                         static_cast<int64_t>(i4.size()), p.data());
  EXPECT_TRUE(same_vec(p, fx.bytes("i4.pack_int4")));
  std::vector<int8_t> iback(i4.size());
  unpack_int4_low_first(p.data(), static_cast<int64_t>(i4.size()), iback.data());
  EXPECT_TRUE(same_vec(iback, i4));

  for (const auto& c : fx.cases()) {
    const int bits = c["bits"];
    const std::string key = c["key"];
    const auto v = fx.bytes(key);
    const auto shape = fx.shape(key);
    std::vector<uint8_t> packed(uintx_packed_bytes(bits, shape[0], shape[1]));
    pack_uintx(v.data(), bits, shape[0], shape[1], packed.data());
    EXPECT_TRUE(same_vec(packed, fx.bytes(key + ".packed"))) << key;
    std::vector<uint8_t> un(v.size());
    unpack_uintx(packed.data(), bits, shape[0], shape[1], un.data());
    EXPECT_TRUE(same_vec(un, v)) << key;
  }
}

TEST(FormatPacking, Int4LayoutsMatchTorchAO) {
  const Fixture fx("int4.safetensors");
  for (const auto& c : fx.cases()) {
    const std::string key = c["key"];
    if (c["kind"] == "tinygemm") {
      const auto q = fx.bytes(key + ".q");
      std::vector<uint8_t> p(q.size() / 2), back(q.size());
      pack_nibbles_high_first(q.data(), static_cast<int64_t>(q.size()), p.data());
      EXPECT_TRUE(same_vec(p, fx.bytes(key + ".prepack"))) << key;
      unpack_nibbles_high_first(p.data(), static_cast<int64_t>(q.size()), back.data());
      EXPECT_TRUE(same_vec(back, q));
    } else {
      const auto q = fx.bytes(key + ".q");
      std::vector<uint8_t> p(q.size() / 2);
      pack_nibbles_low_first(q.data(), static_cast<int64_t>(q.size()), p.data());
      EXPECT_TRUE(same_vec(p, fx.bytes(key + ".packed"))) << key;
    }
  }
}

TEST(FormatPacking, Fp6RoundTripAndLayout) {
  const uint8_t codes[4] = {0x3F, 0x00, 0x2A, 0x15};
  uint8_t p[3];
  pack_fp6(codes, 4, p);
  EXPECT_EQ(p[0], 0xFC);  // 111111 00
  EXPECT_EQ(p[1], 0x0A);  // 0000 1010
  EXPECT_EQ(p[2], 0x95);  // 10 010101
  std::mt19937 rng(9);
  std::vector<uint8_t> v(4096), packed(fp6_packed_bytes(4096)), back(4096);
  for (auto& x : v) x = rng() & 0x3F;
  pack_fp6(v.data(), 4096, packed.data());
  unpack_fp6(packed.data(), 4096, back.data());
  EXPECT_TRUE(same_vec(back, v));
  for (int bits = 1; bits <= 7; ++bits) {
    std::vector<uint8_t> u(8 * 64), pk(uintx_packed_bytes(bits, 8, 64)), ub(8 * 64);
    for (auto& x : u) x = rng() & ((1 << bits) - 1);
    pack_uintx(u.data(), bits, 8, 64, pk.data());
    unpack_uintx(pk.data(), bits, 8, 64, ub.data());
    EXPECT_TRUE(same_vec(ub, u)) << bits;
  }
}

TEST(FormatPacking, BadArguments) {
  uint8_t buf[16] = {};
  EXPECT_THROW(pack_nibbles_low_first(buf, 3, buf), ao::Error);
  EXPECT_THROW(pack_fp6(buf, 6, buf), ao::Error);
  EXPECT_THROW(pack_uintx(buf, 8, 1, 8, buf), ao::Error);
  EXPECT_THROW(pack_uintx(buf, 3, 1, 12, buf), ao::Error);
}

}  // namespace
}  // namespace ao::formats

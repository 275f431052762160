#include "ao/formats/packing.h"

#include <cstring>

#include "ao/core/error.h"

namespace ao::formats {

namespace {
void check_multiple(int64_t n, int64_t m, const char* what) {
  AO_CHECK(n >= 0 && n % m == 0, "{}: element count {} must be a non-negative multiple of {}", what,
           n, m);
}
}  // namespace

void pack_nibbles_low_first(const uint8_t* v, int64_t n, uint8_t* packed) {
  check_multiple(n, 2, "pack_nibbles_low_first");
  for (int64_t i = 0; i < n / 2; ++i)
    packed[i] = static_cast<uint8_t>((v[2 * i] & 0x0F) | (v[2 * i + 1] << 4));
}

void unpack_nibbles_low_first(const uint8_t* packed, int64_t n, uint8_t* v) {
  check_multiple(n, 2, "unpack_nibbles_low_first");
  for (int64_t i = 0; i < n / 2; ++i) {
    v[2 * i] = packed[i] & 0x0F;
    v[2 * i + 1] = packed[i] >> 4;
  }
}

void unpack_int4_low_first(const uint8_t* packed, int64_t n, int8_t* v) {
  check_multiple(n, 2, "unpack_int4_low_first");
  for (int64_t i = 0; i < n / 2; ++i) {
    v[2 * i] = static_cast<int8_t>(static_cast<int8_t>(packed[i] << 4) >> 4);
    v[2 * i + 1] = static_cast<int8_t>(static_cast<int8_t>(packed[i]) >> 4);
  }
}

void pack_nibbles_high_first(const uint8_t* v, int64_t n, uint8_t* packed) {
  check_multiple(n, 2, "pack_nibbles_high_first");
  for (int64_t i = 0; i < n / 2; ++i)
    packed[i] = static_cast<uint8_t>((v[2 * i] << 4) | (v[2 * i + 1] & 0x0F));
}

void unpack_nibbles_high_first(const uint8_t* packed, int64_t n, uint8_t* v) {
  check_multiple(n, 2, "unpack_nibbles_high_first");
  for (int64_t i = 0; i < n / 2; ++i) {
    v[2 * i] = packed[i] >> 4;
    v[2 * i + 1] = packed[i] & 0x0F;
  }
}

int64_t fp6_packed_bytes(int64_t n) {
  check_multiple(n, 4, "fp6_packed_bytes");
  return n / 4 * 3;
}

void pack_fp6(const uint8_t* c, int64_t n, uint8_t* p) {
  check_multiple(n, 4, "pack_fp6");
  for (int64_t i = 0; i < n / 4; ++i) {
    const uint8_t a = c[4 * i] & 0x3F, b = c[4 * i + 1] & 0x3F, d2 = c[4 * i + 2] & 0x3F,
                  d3 = c[4 * i + 3] & 0x3F;
    p[3 * i] = static_cast<uint8_t>((a << 2) | (b >> 4));
    p[3 * i + 1] = static_cast<uint8_t>(((b & 0x0F) << 4) | (d2 >> 2));
    p[3 * i + 2] = static_cast<uint8_t>(((d2 & 0x03) << 6) | d3);
  }
}

void unpack_fp6(const uint8_t* p, int64_t n, uint8_t* c) {
  check_multiple(n, 4, "unpack_fp6");
  for (int64_t i = 0; i < n / 4; ++i) {
    const uint8_t x = p[3 * i], y = p[3 * i + 1], z = p[3 * i + 2];
    c[4 * i] = x >> 2;
    c[4 * i + 1] = static_cast<uint8_t>(((x & 0x03) << 4) | (y >> 4));
    c[4 * i + 2] = static_cast<uint8_t>(((y & 0x0F) << 2) | (z >> 6));
    c[4 * i + 3] = z & 0x3F;
  }
}

// ---- TorchAO uintx planar shards ------------------------------------------------------------
namespace {

struct UintxShards {
  int count;
  int bits[3];
  int shift[3];  // position of the piece inside the element ("shifts")
  uint8_t mask[3];
};

UintxShards uintx_shards(int bits) {
  AO_CHECK(bits >= 1 && bits <= 7, "pack_uintx: unsupported width {} (expected 1..7 bits)", bits);
  static const UintxShards table[8] = {
      {},
      {1, {1}, {0}, {0x01}},
      {1, {2}, {0}, {0x03}},
      {2, {2, 1}, {0, 2}, {0x03, 0x04}},
      {1, {4}, {0}, {0x0F}},
      {2, {4, 1}, {0, 4}, {0x0F, 0x10}},
      {2, {4, 2}, {0, 4}, {0x0F, 0x30}},
      {3, {4, 2, 1}, {0, 4, 6}, {0x0F, 0x30, 0x40}},
  };
  return table[bits];
}

inline uint8_t shift_left(uint32_t v, int s) {  // abs_lsh
  return static_cast<uint8_t>(s >= 0 ? v << s : v >> -s);
}
inline uint8_t shift_right(uint32_t v, int s) {  // abs_rsh
  return static_cast<uint8_t>(s >= 0 ? v >> s : v << -s);
}

}  // namespace

int64_t uintx_packed_bytes(int bits, int64_t rows, int64_t cols) {
  uintx_shards(bits);
  check_multiple(cols, 8, "pack_uintx (columns)");
  return rows * cols * bits / 8;
}

void pack_uintx(const uint8_t* v, int bits, int64_t rows, int64_t cols, uint8_t* packed) {
  const UintxShards s = uintx_shards(bits);
  check_multiple(cols, 8, "pack_uintx (columns)");
  uint8_t* out = packed;
  for (int i = 0; i < s.count; ++i) {
    const int b = s.bits[i], scale = 8 / b;
    const int64_t width = cols * b / 8;  // == cols / scale
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* row = v + r * cols;
      uint8_t* dst = out + r * width;
      for (int64_t kk = 0; kk < width; ++kk) {
        uint8_t acc = 0;
        for (int j = 0; j < scale; ++j)
          acc |= shift_left(row[j * width + kk] & s.mask[i], j * b - s.shift[i]);
        dst[kk] = acc;
      }
    }
    out += rows * width;
  }
}

void unpack_uintx(const uint8_t* packed, int bits, int64_t rows, int64_t cols, uint8_t* v) {
  const UintxShards s = uintx_shards(bits);
  check_multiple(cols, 8, "unpack_uintx (columns)");
  std::memset(v, 0, static_cast<size_t>(rows * cols));
  const uint8_t* in = packed;
  for (int i = 0; i < s.count; ++i) {
    const int b = s.bits[i], scale = 8 / b;
    const int64_t width = cols * b / 8;
    const uint8_t piece_mask = static_cast<uint8_t>((1u << b) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      for (int j = 0; j < scale; ++j) {
        const uint8_t m = static_cast<uint8_t>(piece_mask << (j * b));
        for (int64_t kk = 0; kk < width; ++kk)
          v[r * cols + j * width + kk] |= shift_right(in[r * width + kk] & m, j * b - s.shift[i]);
      }
    }
    in += rows * width;
  }
}

}  // namespace ao::formats

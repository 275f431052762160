#include "ao/core/cpu_features.h"
#include "ao/formats/int4_tile_pack.h"

#include <cstring>

#include "ao/core/error.h"
#include "ao/formats/float_formats.h"

namespace ao::formats {

namespace {

void check_tile(int64_t n, int64_t k, int ikt, const char* what) {
  AO_CHECK(ikt == 2 || ikt == 4 || ikt == 8, "{}: inner_k_tiles must be 2, 4 or 8, got {}", what,
           ikt);
  AO_CHECK(n > 0 && n % 8 == 0, "{}: N (rows) must be a positive multiple of 8, got {}", what, n);
  AO_CHECK(k > 0 && k % (int64_t{ikt} * 16) == 0,
           "{}: K (columns) must be a positive multiple of inner_k_tiles * 16 = {}, got {}", what,
           ikt * 16, k);
}

// Column of nibble j (0..7) of a tile word, relative to k0 (see the header).
constexpr int kNibbleCol[8] = {0, 8, 16, 24, 1, 9, 17, 25};

// Calls f(word_index, row, col0) for every int32 of the tile layout.
template <typename F>
void for_each_tile_word(int64_t n, int64_t k, int ikt, F&& f) {
  const int64_t n_tiles = n / 8, k_super = k / (int64_t{ikt} * 16), words = ikt / 2;
  int64_t idx = 0;
  for (int64_t nt = 0; nt < n_tiles; ++nt)
    for (int64_t ko = 0; ko < k_super; ++ko)
      for (int t = 0; t < 32; ++t)
        for (int64_t w = 0; w < words; ++w, ++idx) {
          const int64_t row = nt * 8 + t / 4;
          const int64_t col0 = (ko * ikt + 2 * w) * 16 + 2 * (t % 4);
          f(idx, row, col0);
        }
}

}  // namespace

std::array<int64_t, 4> int4_tile_packed_shape(int64_t n, int64_t k, int inner_k_tiles) {
  check_tile(n, k, inner_k_tiles, "int4_tile_packed_shape");
  return {n / 8, k / (int64_t{inner_k_tiles} * 16), 32, inner_k_tiles / 2};
}

void int4_tile_pack(const uint8_t* q, int64_t n, int64_t k, int inner_k_tiles, int32_t* packed) {
  check_tile(n, k, inner_k_tiles, "int4_tile_pack");
  for_each_tile_word(n, k, inner_k_tiles, [&](int64_t idx, int64_t row, int64_t col0) {
    const uint8_t* r = q + row * k + col0;
    uint32_t word = 0;
    for (int j = 0; j < 8; ++j) word |= static_cast<uint32_t>(r[kNibbleCol[j]] & 0x0F) << (4 * j);
    packed[idx] = static_cast<int32_t>(word);
  });
}

void int4_tile_unpack(const int32_t* packed, int64_t n, int64_t k, int inner_k_tiles, uint8_t* q) {
  check_tile(n, k, inner_k_tiles, "int4_tile_unpack");
  for_each_tile_word(n, k, inner_k_tiles, [&](int64_t idx, int64_t row, int64_t col0) {
    const uint32_t word = static_cast<uint32_t>(packed[idx]);
    uint8_t* r = q + row * k + col0;
    for (int j = 0; j < 8; ++j) r[kNibbleCol[j]] = (word >> (4 * j)) & 0x0F;
  });
}

// ---- scale_and_zero ---------------------------------------------------------------------------

int64_t tinygemm_groups(int64_t k, int64_t group_size) {
  AO_CHECK(group_size >= 2 && k > 0 && k % group_size == 0,
           "tinygemm: group size {} must be >= 2 and divide K = {}", group_size, k);
  return k / group_size;
}

namespace {
void check_sz(int64_t n, int64_t groups, const char* what) {
  AO_CHECK(n > 0 && groups > 0, "{}: N and the group count must be positive, got N = {}, {} groups",
           what, n, groups);
}
}  // namespace

void interleave_scale_and_zero(const float* scale, const float* zero, int64_t n, int64_t groups,
                               float* out) {
  check_sz(n, groups, "interleave_scale_and_zero");
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < n; ++r) {
      out[(g * n + r) * 2 + 0] = scale[r * groups + g];
      out[(g * n + r) * 2 + 1] = zero[r * groups + g];
    }
}

void interleave_scale_and_zero_bf16(const float* scale, const float* zero, int64_t n,
                                    int64_t groups, uint16_t* out) {
  check_sz(n, groups, "interleave_scale_and_zero_bf16");
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < n; ++r) {
      out[(g * n + r) * 2 + 0] = f32_to_bf16_rne(scale[r * groups + g]);
      out[(g * n + r) * 2 + 1] = f32_to_bf16_rne(zero[r * groups + g]);
    }
}

void deinterleave_scale_and_zero(const float* in, int64_t n, int64_t groups, float* scale,
                                 float* zero) {
  check_sz(n, groups, "deinterleave_scale_and_zero");
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < n; ++r) {
      scale[r * groups + g] = in[(g * n + r) * 2 + 0];
      zero[r * groups + g] = in[(g * n + r) * 2 + 1];
    }
}

void deinterleave_scale_and_zero_bf16(const uint16_t* in, int64_t n, int64_t groups, float* scale,
                                      float* zero) {
  check_sz(n, groups, "deinterleave_scale_and_zero_bf16");
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < n; ++r) {
      scale[r * groups + g] = bf16_bits_to_f32(in[(g * n + r) * 2 + 0]);
      zero[r * groups + g] = bf16_bits_to_f32(in[(g * n + r) * 2 + 1]);
    }
}

// ---- CPU layout ---------------------------------------------------------------------------------

Int4CpuPackIsa int4_cpu_pack_isa_native() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (ao::cpu_features().avx512f && ao::cpu_features().avx512bw &&
      ao::cpu_features().avx512vl && ao::cpu_features().avx512dq)
    return Int4CpuPackIsa::avx512;
  if (ao::cpu_features().avx2 && ao::cpu_features().fma) return Int4CpuPackIsa::avx2;
#endif
  return Int4CpuPackIsa::scalar;
}

namespace {

void check_cpu(int64_t n, int64_t k, Int4CpuPackIsa isa, const char* what) {
  AO_CHECK(
      isa == Int4CpuPackIsa::avx512 || isa == Int4CpuPackIsa::avx2 || isa == Int4CpuPackIsa::scalar,
      "{}: unknown ISA {}", what, static_cast<int>(isa));
  AO_CHECK(n > 0 && n % 16 == 0, "{}: N (rows) must be a positive multiple of 16, got {}", what, n);
  AO_CHECK(k > 0 && k % 2 == 0, "{}: K (columns) must be a positive even number, got {}", what, k);
}

// Calls f(byte_index, row_low, row_high, col) for every output byte: the byte is
// q[row_high][col] << 4 | q[row_low][col].
template <typename F>
void for_each_cpu_byte(int64_t n, int64_t k, Int4CpuPackIsa isa, F&& f) {
  const int64_t block_n = isa == Int4CpuPackIsa::avx512 ? 64 : 32;
  for (int64_t b0 = 0; b0 < n; b0 += block_n) {
    const int64_t nb = n - b0 < block_n ? n - b0 : block_n;
    const int64_t base = b0 * k / 2;
    for (int64_t c = 0; c < k; ++c) {
      if (nb == block_n && isa == Int4CpuPackIsa::avx512) {
        for (int64_t d = 0; d < 16; ++d) {
          f(base + c * 32 + d, b0 + d, b0 + d + 32, c);
          f(base + c * 32 + 16 + d, b0 + d + 16, b0 + d + 48, c);
        }
      } else if (nb == block_n && isa == Int4CpuPackIsa::avx2) {
        for (int64_t d = 0; d < 16; ++d) f(base + c * 16 + d, b0 + d, b0 + d + 16, c);
      } else {
        for (int64_t r = 0; r < nb; r += 2) f(base + c * nb / 2 + r / 2, b0 + r, b0 + r + 1, c);
      }
    }
  }
}

}  // namespace

void int4_cpu_pack(const uint8_t* q, int64_t n, int64_t k, Int4CpuPackIsa isa, uint8_t* packed) {
  check_cpu(n, k, isa, "int4_cpu_pack");
  for_each_cpu_byte(n, k, isa, [&](int64_t i, int64_t lo, int64_t hi, int64_t c) {
    packed[i] = static_cast<uint8_t>((q[hi * k + c] & 0x0F) << 4 | (q[lo * k + c] & 0x0F));
  });
}

void int4_cpu_unpack(const uint8_t* packed, int64_t n, int64_t k, Int4CpuPackIsa isa, uint8_t* q) {
  check_cpu(n, k, isa, "int4_cpu_unpack");
  for_each_cpu_byte(n, k, isa, [&](int64_t i, int64_t lo, int64_t hi, int64_t c) {
    q[lo * k + c] = packed[i] & 0x0F;
    q[hi * k + c] = packed[i] >> 4;
  });
}

}  // namespace ao::formats

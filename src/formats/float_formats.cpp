#include "ao/core/cpu_features.h"
#include "ao/formats/float_formats.h"

#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>

#include "ao/core/error.h"
#include "formats/float_codec.h"

namespace ao::formats {
namespace detail {
namespace {

// PyTorch's fp8 casts (torch/headeronly/util/Float8_e4m3fn.h, Float8_e5m2.h).
constexpr EncodeParams kE4m3fn{/*sat_bits=*/1087u << 20,
                               /*sat_code=*/0x7F,
                               /*nan_to_code=*/true,
                               /*nan_code=*/0x7F,
                               /*denorm_bits=*/121u << 23,
                               /*denorm_mask=*/141u << 23,
                               /*normal_add=*/static_cast<int32_t>((7u - 127u) << 23) + 0x7FFFF,
                               /*shift=*/20,
                               /*sign_shift=*/24,
                               /*sign_mask=*/0x80,
                               /*max_value=*/448.0f};
constexpr EncodeParams kE5m2{143u << 23,
                             0x7C,
                             true,
                             0x7F,
                             113u << 23,
                             134u << 23,
                             static_cast<int32_t>((15u - 127u) << 23) + 0xFFFFF,
                             21,
                             24,
                             0x80,
                             57344.0f};

// TorchAO's _f32_to_floatx_unpacked constants for (ebits, mbits).
EncodeParams floatx_params(int ebits, int mbits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const float max_normal =
      std::ldexp(static_cast<float>((1 << (mbits + 1)) - 1), (1 << ebits) - 1 - bias - mbits);
  const float min_normal = std::ldexp(1.0f, 1 - bias);
  EncodeParams p{};
  p.sat_bits = f32_bits(max_normal);
  p.sat_code = (1u << (ebits + mbits)) - 1;
  p.nan_to_code = false;
  p.nan_code = 0;
  p.denorm_bits = f32_bits(min_normal);
  p.denorm_mask = static_cast<uint32_t>((127 - bias) + (23 - mbits) + 1) << 23;
  p.normal_add =
      static_cast<int32_t>(static_cast<uint32_t>(bias - 127) << 23) + ((1 << (23 - mbits - 1)) - 1);
  p.shift = 23 - mbits;
  p.sign_shift = 23 + 8 - mbits - ebits;
  p.sign_mask = 1u << (ebits + mbits);
  p.max_value = max_normal;
  return p;
}

const EncodeParams kE2m3 = floatx_params(2, 3);
const EncodeParams kE3m2 = floatx_params(3, 2);
const EncodeParams kE2m1 = floatx_params(2, 1);

// TorchAO's _floatx_unpacked_to_f32 values: +-0, subnormals, normals; no NaN/Inf.
float floatx_decode(uint8_t c, int ebits, int mbits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint32_t sign_mask = 1u << (ebits + mbits);
  const bool neg = (c & sign_mask) != 0;
  const uint32_t pos = c & (sign_mask - 1);
  const uint32_t e = pos >> mbits, m = pos & ((1u << mbits) - 1);
  float v;
  if (e == 0) {
    v = std::ldexp(static_cast<float>(m), 1 - bias - mbits);
  } else {
    v = std::ldexp(static_cast<float>(m + (1u << mbits)), static_cast<int>(e) - bias - mbits);
  }
  return neg ? -v : v;
}

struct Tables {
  std::array<std::array<float, 256>, static_cast<int>(FloatFormat::count_)> t;
  Tables() {
    for (int c = 0; c < 256; ++c) {
      const auto u = static_cast<uint8_t>(c);
      t[0][c] = f8_e4m3fn_to_f32(u);
      t[1][c] = f8_e5m2_to_f32(u);
      t[2][c] = f6_e2m3_to_f32(static_cast<uint8_t>(u & 0x3F));
      t[3][c] = f6_e3m2_to_f32(static_cast<uint8_t>(u & 0x3F));
      t[4][c] = f4_e2m1_to_f32(static_cast<uint8_t>(u & 0x0F));
      t[5][c] = e8m0_to_f32(u);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const EncodeParams& encode_params(FloatFormat f) {
  switch (f) {
    case FloatFormat::f8_e4m3fn:
      return kE4m3fn;
    case FloatFormat::f8_e5m2:
      return kE5m2;
    case FloatFormat::f6_e2m3:
      return kE2m3;
    case FloatFormat::f6_e3m2:
      return kE3m2;
    case FloatFormat::f4_e2m1:
      return kE2m1;
    default:
      break;
  }
  fail("formats: {} has no element encoder parameters", float_format_info(f).name);
}

const float* decode_table(FloatFormat f) { return tables().t[static_cast<int>(f)].data(); }

// PyTorch's fp8e8m0fnu_from_fp32_value: RNE on the exponent, NaN/Inf -> 255, sign ignored.
uint8_t e8m0_encode(float x) {
  const uint32_t b = f32_bits(x);
  uint32_t e = (b >> 23) & 0xFF;
  if (e == 0xFF) return 0xFF;
  const bool g = (b & 0x400000u) != 0;
  const bool rs = (b & 0x3FFFFFu) != 0;
  const bool lsb = e > 0;
  if (g && (rs || lsb)) ++e;
  return static_cast<uint8_t>(e);
}

}  // namespace detail

using namespace detail;

uint8_t f32_to_f8_e4m3fn(float x) { return encode_with(kE4m3fn, x); }
uint8_t f32_to_f8_e5m2(float x) { return encode_with(kE5m2, x); }
uint8_t f32_to_f6_e2m3(float x) { return encode_with(kE2m3, x); }
uint8_t f32_to_f6_e3m2(float x) { return encode_with(kE3m2, x); }
uint8_t f32_to_f4_e2m1(float x) { return encode_with(kE2m1, x); }
uint8_t f32_to_e8m0(float x) { return e8m0_encode(x); }

float f8_e4m3fn_to_f32(uint8_t c) {
  const uint32_t sign = (c & 0x80u) << 24;
  const uint32_t e = (c >> 3) & 0xF, m = c & 0x7;
  if (e == 0xF && m == 0x7) return f32_from_bits(sign | 0x7FF00000u);  // as PyTorch
  float v = e == 0 ? std::ldexp(static_cast<float>(m), -9)
                   : std::ldexp(static_cast<float>(m + 8), static_cast<int>(e) - 10);
  return sign ? -v : v;
}

float f8_e5m2_to_f32(uint8_t c) {
  const uint32_t sign = (c & 0x80u) << 24;
  const uint32_t e = (c >> 2) & 0x1F, m = c & 0x3;
  if (e == 0x1F) {
    if (m == 0) return f32_from_bits(sign | 0x7F800000u);
    return f32_from_bits(sign | 0x7FC00000u | (m << 21));  // quiet NaN keeping the payload
  }
  float v = e == 0 ? std::ldexp(static_cast<float>(m), -16)
                   : std::ldexp(static_cast<float>(m + 4), static_cast<int>(e) - 17);
  return sign ? -v : v;
}

float f6_e2m3_to_f32(uint8_t c) { return floatx_decode(c, 2, 3); }
float f6_e3m2_to_f32(uint8_t c) { return floatx_decode(c, 3, 2); }
float f4_e2m1_to_f32(uint8_t c) { return floatx_decode(c, 2, 1); }

float e8m0_to_f32(uint8_t c) {
  if (c == 0) return f32_from_bits(0x00400000u);
  if (c == 0xFF) return f32_from_bits(0x7F800001u);
  return f32_from_bits(static_cast<uint32_t>(c) << 23);
}

uint16_t f32_to_bf16_rne(float x) {
  if (x != x) return 0x7FC0;
  const uint32_t u = f32_bits(x);
  return static_cast<uint16_t>((u + ((u >> 16) & 1) + 0x7FFFu) >> 16);
}

namespace {
bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return ao::cpu_features().avx2_fma_f16c();
  }();
  return has;
}
std::atomic<bool>& simd_enabled() {
  static std::atomic<bool> on{cpu_has_avx2() && std::getenv("AO_FORMATS_NO_SIMD") == nullptr};
  return on;
}
}  // namespace

bool formats_use_avx2() { return simd_enabled().load(std::memory_order_relaxed); }

void set_formats_simd(bool enabled) { simd_enabled().store(enabled && cpu_has_avx2()); }

namespace {

template <FloatFormat F>
void encode_ref(const float* x, uint8_t* codes, int64_t n, bool saturate) {
  if constexpr (F == FloatFormat::e8m0) {
    (void)saturate;
    for (int64_t i = 0; i < n; ++i) codes[i] = e8m0_encode(x[i]);
  } else {
    const EncodeParams& p = encode_params(F);
    if (saturate) {
      for (int64_t i = 0; i < n; ++i) codes[i] = encode_with(p, clamp_keep_nan(x[i], p.max_value));
    } else {
      for (int64_t i = 0; i < n; ++i) codes[i] = encode_with(p, x[i]);
    }
  }
}

template <FloatFormat F>
void decode_ref(const uint8_t* codes, float* out, int64_t n) {
  const float* t = decode_table(F);
  for (int64_t i = 0; i < n; ++i) out[i] = t[codes[i]];
}

template <FloatFormat F>
void encode_fast(const float* x, uint8_t* codes, int64_t n, bool saturate) {
  if (!formats_use_avx2()) return encode_ref<F>(x, codes, n, saturate);
  if constexpr (F == FloatFormat::e8m0) {
    encode_e8m0_avx2(x, codes, n);
  } else {
    encode_avx2(encode_params(F), x, codes, n, saturate);
  }
}

template <FloatFormat F>
void decode_fast(const uint8_t* codes, float* out, int64_t n) {
  if (!formats_use_avx2()) return decode_ref<F>(codes, out, n);
  if constexpr (F == FloatFormat::e8m0) {
    decode_e8m0_avx2(codes, out, n);
  } else {
    decode_arith_avx2(F, codes, out, n);
  }
}

template <FloatFormat F>
constexpr FloatFormatInfo row(const char* name, int bits, int eb, int mb, int bias, float maxv,
                              int maxp2, bool inf, bool nan, EncodeFn enc, DecodeFn dec) {
  return FloatFormatInfo{F,
                         name,
                         bits,
                         eb,
                         mb,
                         bias,
                         maxv,
                         maxp2,
                         inf,
                         nan,
                         enc,
                         dec,
                         encode_ref<F>,
                         decode_ref<F>,
                         encode_fast<F>,
                         decode_fast<F>};
}

// The traits table: one row per format.
const FloatFormatInfo kFormats[] = {
    row<FloatFormat::f8_e4m3fn>("f8_e4m3fn", 8, 4, 3, 7, 448.0f, 8, false, true, f32_to_f8_e4m3fn,
                                f8_e4m3fn_to_f32),
    row<FloatFormat::f8_e5m2>("f8_e5m2", 8, 5, 2, 15, 57344.0f, 15, true, true, f32_to_f8_e5m2,
                              f8_e5m2_to_f32),
    row<FloatFormat::f6_e2m3>("f6_e2m3", 6, 2, 3, 1, 7.5f, 2, false, false, f32_to_f6_e2m3,
                              f6_e2m3_to_f32),
    row<FloatFormat::f6_e3m2>("f6_e3m2", 6, 3, 2, 3, 28.0f, 4, false, false, f32_to_f6_e3m2,
                              f6_e3m2_to_f32),
    row<FloatFormat::f4_e2m1>("f4_e2m1", 4, 2, 1, 1, 6.0f, 2, false, false, f32_to_f4_e2m1,
                              f4_e2m1_to_f32),
    row<FloatFormat::e8m0>("e8m0", 8, 8, 0, 127, 1.7014118e38f, 127, false, true, f32_to_e8m0,
                           e8m0_to_f32),
};
static_assert(std::size(kFormats) == static_cast<size_t>(FloatFormat::count_));

}  // namespace

const FloatFormatInfo& float_format_info(FloatFormat f) {
  const auto i = static_cast<size_t>(f);
  AO_CHECK(i < std::size(kFormats), "formats: invalid FloatFormat value {}", i);
  return kFormats[i];
}

FloatFormat float_format_from_name(std::string_view name) {
  for (const auto& r : kFormats)
    if (name == r.name) return r.format;
  fail(
      "formats: unknown float format '{}' (expected f8_e4m3fn, f8_e5m2, f6_e2m3, f6_e3m2, "
      "f4_e2m1 or e8m0)",
      name);
}

uint8_t encode(FloatFormat f, float x, bool saturate) {
  const FloatFormatInfo& info = float_format_info(f);
  if (saturate && f != FloatFormat::e8m0) x = clamp_keep_nan(x, info.max_value);
  return info.encode(x);
}

float decode(FloatFormat f, uint8_t code) { return float_format_info(f).decode(code); }

void encode_bulk(FloatFormat f, const float* x, uint8_t* codes, int64_t n, bool saturate) {
  AO_CHECK(n >= 0, "formats: encode_bulk: negative count {}", n);
  float_format_info(f).encode_bulk(x, codes, n, saturate);
}

void decode_bulk(FloatFormat f, const uint8_t* codes, float* out, int64_t n) {
  AO_CHECK(n >= 0, "formats: decode_bulk: negative count {}", n);
  float_format_info(f).decode_bulk(codes, out, n);
}

}  // namespace ao::formats

#include "quant/quant_numerics.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "ao/formats/float_formats.h"

namespace ao::quant::detail {

AffineParams choose_affine_params(const float* x, int64_t n, Mapping mapping, int qmin, int qmax,
                                  float eps) {
  float mn = std::numeric_limits<float>::infinity(), mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  const float min_neg = std::min(mn, 0.0f), max_pos = std::max(mx, 0.0f);
  AffineParams p{};
  if (mapping == Mapping::symmetric) {
    const float amax = std::max(-min_neg, max_pos);
    p.scale = std::max(amax / (static_cast<float>(qmax - qmin) / 2.0f), eps);
    p.zero_point = (qmax + qmin + 1) / 2;
  } else {
    p.scale = std::max((max_pos - min_neg) / static_cast<float>(qmax - qmin), eps);
    float zp = static_cast<float>(qmin) - std::nearbyint(min_neg / p.scale);
    zp = std::clamp(zp, static_cast<float>(qmin), static_cast<float>(qmax));
    p.zero_point = static_cast<int32_t>(zp);
  }
  return p;
}

namespace {

// Int8Tensor passes fp32 machine eps; IntxUnpackedToInt8Tensor's per-token path uses the
// default (smallest normal of the input dtype).
AffineParams int8_per_token_params(const float* row, int64_t K, Mapping mapping) {
  const float eps = mapping == Mapping::symmetric ? kF32Eps : kF32SmallestNormal;
  return choose_affine_params(row, K, mapping, -128, 127, eps);
}

}  // namespace

void fake_quantize_int8_per_token(float* x, int64_t M, int64_t K, Mapping mapping) {
  for (int64_t m = 0; m < M; ++m) {
    float* row = x + m * K;
    const AffineParams p = int8_per_token_params(row, K, mapping);
    const float inv = 1.0f / p.scale;
    for (int64_t k = 0; k < K; ++k)
      row[k] = static_cast<float>(quantize_affine_value(row[k], inv, p.zero_point, -128, 127) -
                                  p.zero_point) *
               p.scale;
  }
}

void quantize_int8_per_token(const float* x, int64_t M, int64_t K, Mapping mapping, int16_t* xq,
                             float* scale) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * K;
    const AffineParams p = int8_per_token_params(row, K, mapping);
    const float inv = 1.0f / p.scale;
    scale[m] = p.scale;
    for (int64_t k = 0; k < K; ++k)
      xq[m * K + k] = static_cast<int16_t>(
          quantize_affine_value(row[k], inv, p.zero_point, -128, 127) - p.zero_point);
  }
}

namespace {

formats::FloatFormat format_of(const MiniFloat& f) {
  if (f.ebits == 4) return formats::FloatFormat::f8_e4m3fn;
  if (f.ebits == 5) return formats::FloatFormat::f8_e5m2;
  if (f.ebits == 3) return formats::FloatFormat::f6_e3m2;
  return f.mbits == 3 ? formats::FloatFormat::f6_e2m3 : formats::FloatFormat::f4_e2m1;
}

}  // namespace

// The element codecs come from ao/formats (bit-exact with PyTorch / TorchAO); saturate
// clamps to +-max first, as TorchAO does before every cast.
uint8_t encode_minifloat(float x, const MiniFloat& f) {
  return formats::encode(format_of(f), x, true);
}

float decode_minifloat(uint8_t code, const MiniFloat& f) {
  return formats::decode(format_of(f), code);
}

const float* minifloat_table(const MiniFloat& f) {
  struct Table {
    float v[256];
  };
  auto build = [](const MiniFloat& m) {
    Table t{};
    const int n = 1 << (1 + m.ebits + m.mbits);
    for (int c = 0; c < 256; ++c)
      t.v[c] = c < n ? decode_minifloat(static_cast<uint8_t>(c), m) : 0.0f;
    return t;
  };
  static const Table e4m3 = build(kE4M3), e5m2 = build(kE5M2), e2m3 = build(kE2M3),
                     e3m2 = build(kE3M2), e2m1 = build(kE2M1);
  if (f.ebits == 4) return e4m3.v;
  if (f.ebits == 5) return e5m2.v;
  if (f.ebits == 3) return e3m2.v;
  return f.mbits == 3 ? e2m3.v : e2m1.v;
}

float e8m0_to_float(uint8_t s) {
  if (s == 255) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, static_cast<int>(s) - 127);
}

uint8_t mx_block_exponent(float amax, const MiniFloat& elem, int elem_emax, MxScaling mode) {
  if (mode == MxScaling::floor) {
    if (std::isnan(amax)) return 255;
    const uint32_t bits = std::bit_cast<uint32_t>(amax);
    int unbiased = static_cast<int>((bits >> 23) & 0xFF) - 127 - elem_emax;
    unbiased = std::clamp(unbiased, -127, 128);
    return static_cast<uint8_t>(unbiased + 127);
  }
  const float descale = amax / elem.max;
  if (std::isnan(descale)) return 255;
  if (std::isinf(descale)) return 254;
  const float e = std::clamp(std::ceil(std::log2(descale)), -127.0f, 127.0f);
  return static_cast<uint8_t>(static_cast<int>(e) + 127);
}

}  // namespace ao::quant::detail

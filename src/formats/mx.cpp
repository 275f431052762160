#include "ao/formats/mx.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "ao/core/error.h"
#include "formats/block_kernels.h"
#include "formats/bulk.h"
#include "formats/float_codec.h"
#include "formats/math_util.h"

namespace ao::formats {

using detail::f32_bits;
using detail::f32_from_bits;

const char* scale_mode_name(ScaleMode m) {
  switch (m) {
    case ScaleMode::floor:
      return "FLOOR";
    case ScaleMode::ceil:
      return "CEIL";
    case ScaleMode::even:
      return "EVEN";
    case ScaleMode::rceil:
      return "RCEIL";
  }
  return "?";
}

namespace {

void check_elem(FloatFormat f, const char* what) {
  AO_CHECK(f != FloatFormat::e8m0 && f < FloatFormat::count_,
           "{}: element format must be f8_e4m3fn, f8_e5m2, f6_e2m3, f6_e3m2 or f4_e2m1, got {}",
           what, float_format_info(f).name);
}

void check_shape(int64_t n, int64_t k, int64_t block, const char* what) {
  AO_CHECK(n > 0 && k > 0, "{}: tensor shape [{}, {}] must be non-empty", what, n, k);
  AO_CHECK(block > 0 && block % 2 == 0, "{}: bad block size {}", what, block);
  AO_CHECK(k % block == 0, "{}: K = {} must be divisible by the block size {}", what, k, block);
}

// RCEIL's exponent: clamp(ceil(log2(descale)), -127, 127) + 127 with log2 rounded to f32
// (torch.log2 on a float32 tensor), NaN -> 255, Inf -> 254.
uint8_t rceil_exponent(float descale) {
  if (descale != descale) return 255;
  if (std::isinf(descale)) return 254;
  const uint32_t b = f32_bits(descale);
  const int32_t e = static_cast<int32_t>((b >> 23) & 0xFF) - 127;
  const uint32_t m = b & 0x7FFFFF;
  // Fast path for normal values: log2 is exactly e when the mantissa is 0, and for a
  // mantissa of 64 ulps or more log2(d) - e > 2^-17 >= half an ulp of any |e| < 128, so the
  // f32-rounded log2 stays above e and its ceil is e + 1. Near 2^e, ask log2.
  if (e > -127 && e < 127 && (m == 0 || m >= 64)) {
    const int32_t c = m == 0 ? e : e + 1;
    return static_cast<uint8_t>((c < -127 ? -127 : (c > 127 ? 127 : c)) + 127);
  }
  const float l = static_cast<float>(std::log2(static_cast<double>(descale)));
  float c = std::ceil(l);
  c = c < -127.0f ? -127.0f : (c > 127.0f ? 127.0f : c);
  return static_cast<uint8_t>(static_cast<int>(c) + 127);
}

void pack_fp4_pairs(const uint8_t* codes, int64_t len, uint8_t* out) {
  for (int64_t i = 0; i < len / 2; ++i)
    out[i] = static_cast<uint8_t>(codes[2 * i] | (codes[2 * i + 1] << 4));
}

}  // namespace

namespace detail {

BlockScaling block_scaling(const BlockRule& rule, float amax) {
  if (rule.kind == BlockRule::mx) {
    const uint8_t s = mx_scale_from_amax(amax, rule.elem, rule.mode);
    if (rule.mode == ScaleMode::rceil) {  // _to_mx_rceil: multiply by the reciprocal
      float rcp;
      if (s == 255)
        rcp = amax / float_format_info(rule.elem).max_value;  // NaN
      else if (s == 254)
        rcp = f32_from_bits(0x00400000u);  // 2^-127
      else if (s == 0)
        rcp = 1.0f;
      else
        rcp = f32_from_bits(static_cast<uint32_t>(254 - s) << 23);  // 2^(127 - s)
      return {s, false, rcp};
    }
    // FLOOR/CEIL/EVEN: divide by the scale as f32, clamped to the smallest normal
    // s == 255 gives +Inf (the NaN case divides by Inf, as TorchAO); s == 0 clamps to 2^-126
    const float sf =
        s == 0 ? f32_from_bits(0x00800000u) : f32_from_bits(static_cast<uint32_t>(s) << 23);
    return {s, true, sf};
  }
  // NVFP4 (nvfp4_quantize): e4m3 block scale, multiply by the reciprocal
  const float eps = std::ldexp(1.0f, -6);  // torch.finfo(float8_e4m3fn).tiny
  const float block_scale = amax / 6.0f;
  if (rule.per_tensor_scale == nullptr) {
    const uint8_t s8 = f32_to_f8_e4m3fn(clamp_keep_nan(clamp_min(block_scale, eps), 448.0f));
    return {s8, false, 1.0f / f8_e4m3fn_to_f32(s8)};
  }
  const float pts = *rule.per_tensor_scale;
  const uint8_t s8 = f32_to_f8_e4m3fn(clamp_keep_nan(clamp_min(block_scale / pts, eps), 448.0f));
  return {s8, false, (1.0f / pts) / f8_e4m3fn_to_f32(s8)};
}

void quantize_blocks_row_ref(const BlockRule& rule, const float* row, int64_t k, int64_t bs,
                             uint8_t* codes, uint8_t* scales) {
  const auto& info = float_format_info(rule.elem);
  std::vector<float> tmp(bs);
  for (int64_t b = 0; b < k / bs; ++b) {
    const float* blk = row + b * bs;
    float amax = 0.0f;
    for (int64_t j = 0; j < bs; ++j) amax = nan_max(amax, std::fabs(blk[j]));
    const BlockScaling sc = block_scaling(rule, amax);
    scales[b] = sc.scale_byte;
    for (int64_t j = 0; j < bs; ++j)
      tmp[j] =
          sc.value != sc.value ? sc.value : (sc.divide ? blk[j] / sc.value : blk[j] * sc.value);
    info.encode_bulk_ref(tmp.data(), codes + b * bs, bs, /*saturate=*/true);
  }
}

}  // namespace detail

namespace {

// Rows of x -> codes (packed for fp4) and scales, through the reference or AVX2 row kernel.
void quantize_rows(const detail::BlockRule& rule, const void* x, DType x_dtype, int64_t n,
                   int64_t k, int64_t bs, uint8_t* qdata, uint8_t* scale) {
  const bool fp4 = rule.elem == FloatFormat::f4_e2m1;
  const bool simd = formats_use_avx2();
  std::vector<float> row(k);
  std::vector<uint8_t> codes(fp4 ? k : 0);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    uint8_t* dst = fp4 ? codes.data() : qdata + r * k;
    if (simd)
      detail::quantize_blocks_row_avx2(rule, row.data(), k, bs, dst, scale + r * (k / bs));
    else
      detail::quantize_blocks_row_ref(rule, row.data(), k, bs, dst, scale + r * (k / bs));
    if (fp4) pack_fp4_pairs(codes.data(), k, qdata + r * k / 2);
  }
}

}  // namespace

uint8_t mx_scale_from_amax(float amax, FloatFormat elem, ScaleMode mode) {
  check_elem(elem, "mx_scale_from_amax");
  const auto& info = float_format_info(elem);
  if (mode == ScaleMode::rceil) return rceil_exponent(amax / info.max_value);
  const bool is_nan = amax != amax;
  uint32_t bits = f32_bits(amax);
  if (mode == ScaleMode::even && !is_nan) {
    bits = (bits + (1u << (23 - info.mbits - 1))) & 0xFF800000u;
  }
  int32_t pow2 = static_cast<int32_t>((bits >> 23) & 0xFF) - 127;
  if (mode == ScaleMode::ceil && (bits & 0x7FFFFF) != 0) ++pow2;
  int32_t unbiased = pow2 - info.max_pow2;
  unbiased = unbiased < -127 ? -127 : (unbiased > 128 ? 128 : unbiased);
  if (is_nan) return 255;
  return static_cast<uint8_t>(unbiased + 127);
}

int64_t mx_qdata_bytes(FloatFormat elem, int64_t n, int64_t k) {
  return elem == FloatFormat::f4_e2m1 ? n * k / 2 : n * k;
}

void mx_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, FloatFormat elem,
                 ScaleMode mode, uint8_t* qdata, uint8_t* scale, int64_t block_size) {
  check_elem(elem, "mx_quantize");
  detail::check_float_input(x_dtype, "mx_quantize");
  check_shape(n, k, block_size, "mx_quantize");
  quantize_rows(detail::BlockRule{detail::BlockRule::mx, elem, mode, nullptr}, x, x_dtype, n, k,
                block_size, qdata, scale);
}

void mx_dequantize(const uint8_t* qdata, const uint8_t* scale, int64_t n, int64_t k,
                   FloatFormat elem, void* out, DType out_dtype, int64_t block_size) {
  check_elem(elem, "mx_dequantize");
  detail::check_float_input(out_dtype, "mx_dequantize (output)");
  check_shape(n, k, block_size, "mx_dequantize");
  const auto& info = float_format_info(elem);
  const bool fp4 = elem == FloatFormat::f4_e2m1;
  const detail::Rounder R(out_dtype);
  const int64_t nb = k / block_size;
  std::vector<float> row(k);
  std::vector<uint8_t> codes(k);
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* src = qdata + (fp4 ? r * k / 2 : r * k);
    if (fp4) {
      for (int64_t i = 0; i < k / 2; ++i) {
        codes[2 * i] = src[i] & 0x0F;
        codes[2 * i + 1] = src[i] >> 4;
      }
      src = codes.data();
    }
    info.decode_bulk(src, row.data(), k);
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t s = scale[r * nb + b];
      float* blk = row.data() + b * block_size;
      if (s == 255) {  // NaN scale: the whole block is the scale's NaN (0x7FC00000)
        for (int64_t j = 0; j < block_size; ++j) blk[j] = f32_from_bits(0x7FC00000u);
        continue;
      }
      const float sf = R(std::ldexp(1.0f, static_cast<int>(s) - 127));
      for (int64_t j = 0; j < block_size; ++j) blk[j] = R(R(blk[j]) * sf);
    }
    detail::store_row(row.data(), out, out_dtype, r, k);
  }
}

float nvfp4_per_tensor_scale(float amax) { return amax / (448.0f * 6.0f); }

void nvfp4_quantize(const void* x, DType x_dtype, int64_t n, int64_t k,
                    const float* per_tensor_scale, uint8_t* qdata, uint8_t* scale) {
  detail::check_float_input(x_dtype, "nvfp4_quantize");
  check_shape(n, k, kNvfp4BlockSize, "nvfp4_quantize");
  quantize_rows(detail::BlockRule{detail::BlockRule::nvfp4, FloatFormat::f4_e2m1, ScaleMode::floor,
                                  per_tensor_scale},
                x, x_dtype, n, k, kNvfp4BlockSize, qdata, scale);
}

void nvfp4_dequantize(const uint8_t* qdata, const uint8_t* scale, int64_t n, int64_t k,
                      const float* per_tensor_scale, void* out, DType out_dtype) {
  detail::check_float_input(out_dtype, "nvfp4_dequantize (output)");
  check_shape(n, k, kNvfp4BlockSize, "nvfp4_dequantize");
  const int64_t bs = kNvfp4BlockSize, nb = k / bs;
  const float* lut = detail::decode_table(FloatFormat::f4_e2m1);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      float s = f8_e4m3fn_to_f32(scale[r * nb + b]);
      if (per_tensor_scale != nullptr) s = *per_tensor_scale * s;
      for (int64_t j = 0; j < bs; ++j) {
        const int64_t e = b * bs + j;
        const uint8_t byte = qdata[(r * k + e) / 2];
        row[e] = lut[(e % 2 == 0) ? (byte & 0x0F) : (byte >> 4)] * s;
      }
    }
    detail::store_row(row.data(), out, out_dtype, r, k);
  }
}

int64_t blocked_scale_bytes(int64_t rows, int64_t cols) {
  return ((rows + 127) / 128) * 128 * ((cols + 3) / 4) * 4;
}

namespace {
// Offset in the blocked layout of element (r, c) of the padded matrix.
inline int64_t blocked_offset(int64_t r, int64_t c, int64_t col_tiles) {
  const int64_t tile = (r / 128) * col_tiles + c / 4;
  const int64_t rr = r % 128;
  return tile * 512 + (rr % 32) * 16 + (rr / 32) * 4 + c % 4;
}
}  // namespace

void to_blocked(const uint8_t* scale, int64_t rows, int64_t cols, uint8_t* blocked) {
  AO_CHECK(rows > 0 && cols > 0, "to_blocked: scale shape [{}, {}] must be non-empty", rows, cols);
  const int64_t col_tiles = (cols + 3) / 4;
  std::memset(blocked, 0, static_cast<size_t>(blocked_scale_bytes(rows, cols)));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      blocked[blocked_offset(r, c, col_tiles)] = scale[r * cols + c];
}

void from_blocked(const uint8_t* blocked, int64_t rows, int64_t cols, uint8_t* scale) {
  AO_CHECK(rows > 0 && cols > 0, "from_blocked: scale shape [{}, {}] must be non-empty", rows,
           cols);
  const int64_t col_tiles = (cols + 3) / 4;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      scale[r * cols + c] = blocked[blocked_offset(r, c, col_tiles)];
}

}  // namespace ao::formats

#include "ao/formats/float8_scaling.h"

#include <cmath>
#include <vector>

#include "ao/core/error.h"
#include "formats/bulk.h"
#include "formats/math_util.h"

namespace ao::formats {

using detail::Rounder;

namespace {

void check_fp8(FloatFormat f, const char* what) {
  AO_CHECK(f == FloatFormat::f8_e4m3fn || f == FloatFormat::f8_e5m2,
           "{}: element format must be f8_e4m3fn or f8_e5m2, got {}", what,
           float_format_info(f).name);
}

// Per-block amax of |x| (torch.amax(abs(x)): NaN propagates), blocks [N/rows, K/cols].
std::vector<float> block_amax(const void* x, DType x_dtype, int64_t n, int64_t k, Block block) {
  const int64_t bpr = k / block.cols;
  std::vector<float> amax(static_cast<size_t>((n / block.rows) * bpr), 0.0f);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    for (int64_t c = 0; c < bpr; ++c) {
      float& a = amax[(r / block.rows) * bpr + c];
      a = detail::abs_max(row.data() + c * block.cols, block.cols, a);
    }
  }
  return amax;
}

// Applies `fn(row_segment, len, block_index, out)` to each row segment of x as f32.
template <typename Fn>
void for_segments(const void* x, DType x_dtype, int64_t n, int64_t k, Block block, Fn&& fn) {
  const int64_t bpr = k / block.cols;
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    for (int64_t c = 0; c < bpr; ++c)
      fn(row.data() + c * block.cols, block.cols, (r / block.rows) * bpr + c,
         r * k + c * block.cols);
  }
}

}  // namespace

void float8_choose_scale(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                         FloatFormat fp8, float* scale, const AmaxBounds& bounds) {
  check_fp8(fp8, "float8_choose_scale");
  detail::check_float_input(x_dtype, "float8_choose_scale");
  check_block(n, k, block, "float8_choose_scale");
  const Rounder R(x_dtype);
  const float maxv = float_format_info(fp8).max_value;
  const auto amax = block_amax(x, x_dtype, n, k, block);
  for (size_t b = 0; b < amax.size(); ++b) {
    float a = amax[b];
    if (bounds.lb) a = R(detail::clamp_min(a, *bounds.lb));
    if (bounds.ub && a == a && a > *bounds.ub) a = R(*bounds.ub);
    scale[b] = R(a / maxv);
  }
}

namespace {

// The inference convention multiplies by 1/scale on the way in and by scale on the way out
// (x / scale, q * scale); the training convention the other way round (x * scale, q / scale).
enum class ScaleUse { divide_in, multiply_in };

void quantize_blocks(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                     FloatFormat fp8, const float* scale, uint8_t* q, ScaleUse use,
                     const char* op) {
  check_fp8(fp8, op);
  detail::check_float_input(x_dtype, op);
  check_block(n, k, block, op);
  const auto& info = float_format_info(fp8);
  std::vector<float> tmp(block.cols);
  for_segments(x, x_dtype, n, k, block, [&](const float* seg, int64_t len, int64_t b, int64_t off) {
    if (use == ScaleUse::divide_in)
      detail::div_scalar(seg, scale[b], tmp.data(), len);
    else
      detail::mul_scalar(seg, scale[b], tmp.data(), len);
    info.encode_bulk(tmp.data(), q + off, len, /*saturate=*/true);
  });
}

void dequantize_blocks(const uint8_t* q, int64_t n, int64_t k, Block block, FloatFormat fp8,
                       const float* scale, void* out, DType out_dtype, ScaleUse use,
                       const char* op) {
  check_fp8(fp8, op);
  detail::check_float_input(out_dtype, op);
  check_block(n, k, block, op);
  const auto& info = float_format_info(fp8);
  const int64_t bpr = k / block.cols;
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    info.decode_bulk(q + r * k, row.data(), k);
    for (int64_t c = 0; c < bpr; ++c) {
      float* seg = row.data() + c * block.cols;
      const float sc = scale[(r / block.rows) * bpr + c];
      if (use == ScaleUse::divide_in)
        detail::mul_scalar(seg, sc, seg, block.cols);
      else
        detail::div_scalar(seg, sc, seg, block.cols);
    }
    detail::store_row(row.data(), out, out_dtype, r, k);
  }
}

}  // namespace

void float8_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                     FloatFormat fp8, const float* scale, uint8_t* q) {
  quantize_blocks(x, x_dtype, n, k, block, fp8, scale, q, ScaleUse::divide_in, "float8_quantize");
}

void float8_dequantize(const uint8_t* q, int64_t n, int64_t k, Block block, FloatFormat fp8,
                       const float* scale, void* out, DType out_dtype) {
  dequantize_blocks(q, n, k, block, fp8, scale, out, out_dtype, ScaleUse::divide_in,
                    "float8_dequantize");
}

float float8_training_scale_from_amax(float amax, FloatFormat fp8, bool round_to_pow2) {
  check_fp8(fp8, "float8_training_scale_from_amax");
  const double a = static_cast<double>(amax);
  const double clamped = a != a ? a : (a < 1e-12 ? 1e-12 : a);
  float s = static_cast<float>(static_cast<double>(float_format_info(fp8).max_value) / clamped);
  if (round_to_pow2) {
    // torch.exp2(torch.floor(torch.log2(s))) on float32: log2 rounded to float first, so a
    // scale just below 2^k can round up to 2^k (matched by computing log2 correctly rounded).
    const float l = static_cast<float>(std::log2(static_cast<double>(s)));
    const float f = std::floor(l);
    s = std::isfinite(f) && f >= -160.0f && f <= 160.0f ? std::ldexp(1.0f, static_cast<int>(f))
                                                        : std::exp2(f);
  }
  return s;
}

void float8_training_scale(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                           FloatFormat fp8, bool round_to_pow2, float* scale) {
  check_fp8(fp8, "float8_training_scale");
  detail::check_float_input(x_dtype, "float8_training_scale");
  check_block(n, k, block, "float8_training_scale");
  const auto amax = block_amax(x, x_dtype, n, k, block);
  for (size_t b = 0; b < amax.size(); ++b)
    scale[b] = float8_training_scale_from_amax(amax[b], fp8, round_to_pow2);
}

void float8_training_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                              FloatFormat fp8, const float* scale, uint8_t* q) {
  quantize_blocks(x, x_dtype, n, k, block, fp8, scale, q, ScaleUse::multiply_in,
                  "float8_training_quantize");
}

void float8_training_dequantize(const uint8_t* q, int64_t n, int64_t k, Block block,
                                FloatFormat fp8, const float* scale, void* out, DType out_dtype) {
  dequantize_blocks(q, n, k, block, fp8, scale, out, out_dtype, ScaleUse::multiply_in,
                    "float8_training_dequantize");
}

}  // namespace ao::formats

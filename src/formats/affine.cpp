#include "ao/formats/affine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ao/core/error.h"
#include "ao/formats/float_formats.h"
#include "formats/bulk.h"
#include "formats/math_util.h"

namespace ao::formats {

using detail::Rounder;

const char* mapping_type_name(MappingType m) {
  switch (m) {
    case MappingType::symmetric:
      return "SYMMETRIC";
    case MappingType::symmetric_no_clipping_err:
      return "SYMMETRIC_NO_CLIPPING_ERR";
    case MappingType::asymmetric:
      return "ASYMMETRIC";
  }
  return "?";
}

IntFormat int_format(int bits, bool is_signed) {
  AO_CHECK(bits >= 1 && bits <= 8, "formats: unsupported integer width {} (expected 1..8 bits)",
           bits);
  return IntFormat{bits, is_signed, 0, 0};
}

IntFormat int_format_range(int bits, bool is_signed, int quant_min, int quant_max) {
  const IntFormat full = int_format(bits, is_signed);
  AO_CHECK(quant_min >= full.qmin() && quant_max <= full.qmax() && quant_min < quant_max,
           "formats: quant range [{}, {}] must lie inside [{}, {}] of {}int{}", quant_min,
           quant_max, full.qmin(), full.qmax(), is_signed ? "" : "u", bits);
  return IntFormat{bits, is_signed, quant_min, quant_max};
}

int64_t check_block(int64_t n, int64_t k, Block b, const char* what) {
  AO_CHECK(n > 0 && k > 0, "{}: tensor shape [{}, {}] must be non-empty", what, n, k);
  AO_CHECK(b.rows > 0 && b.cols > 0, "{}: block size [{}, {}] must be positive", what, b.rows,
           b.cols);
  AO_CHECK(n % b.rows == 0 && k % b.cols == 0,
           "{}: block size [{}, {}] does not divide tensor shape [{}, {}] (group size must "
           "divide K)",
           what, b.rows, b.cols, n, k);
  return (n / b.rows) * (k / b.cols);
}

namespace {

void check_fmt(IntFormat f) {
  if (f.range_min < f.range_max)
    int_format_range(f.bits, f.is_signed, f.range_min, f.range_max);
  else
    int_format(f.bits, f.is_signed);
}

}  // namespace

void choose_qparams_affine(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                           MappingType mapping, IntFormat fmt, float* scale, int32_t* zero_point,
                           const AffineOptions& options) {
  check_fmt(fmt);
  detail::check_float_input(x_dtype, "choose_qparams_affine");
  const int64_t nb = check_block(n, k, block, "choose_qparams_affine");
  if (options.scale_dtype)
    AO_CHECK(*options.scale_dtype == DType::f32 || *options.scale_dtype == DType::bf16,
             "choose_qparams_affine: scale dtype must be f32 or bf16, got {}",
             dtype_name(*options.scale_dtype));
  const Rounder R(x_dtype);
  std::vector<float> mn(nb, std::numeric_limits<float>::infinity()),
      mx(nb, -std::numeric_limits<float>::infinity());
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    const int64_t bpr = k / block.cols;
    for (int64_t c = 0; c < bpr; ++c) {
      const int64_t bi = (r / block.rows) * bpr + c;
      detail::min_max(row.data() + c * block.cols, block.cols, &mn[bi], &mx[bi]);
    }
  }
  const float eps = options.eps ? *options.eps : std::ldexp(1.0f, -126);
  const float qmin = static_cast<float>(fmt.qmin()), qmax = static_cast<float>(fmt.qmax());
  for (int64_t b = 0; b < nb; ++b) {
    const float min_neg = detail::nan_min(mn[b], 0.0f);
    const float max_pos = detail::nan_max(mx[b], 0.0f);
    float s;
    float zp;
    if (mapping == MappingType::asymmetric) {
      s = R(R(max_pos - min_neg) / static_cast<float>(fmt.qmax() - fmt.qmin()));
      s = R(detail::clamp_min(s, eps));
      zp = R(qmin - std::nearbyint(R(min_neg / s)));
      zp = std::clamp(zp, qmin, qmax);
    } else {
      if (mapping == MappingType::symmetric) {
        const float m = detail::nan_max(-min_neg, max_pos);
        s = R(m / (static_cast<float>(fmt.qmax() - fmt.qmin()) / 2.0f));
      } else {
        const float smin = R(min_neg / qmin);
        const float smax = R(max_pos / qmax);
        s = smin > smax ? smin : smax;
      }
      zp = static_cast<float>(static_cast<int>((fmt.qmax() + fmt.qmin() + 1) / 2.0));
      s = R(detail::clamp_min(s, eps));
    }
    scale[b] = Rounder(options.scale_dtype.value_or(x_dtype))(s);
    zero_point[b] = static_cast<int32_t>(zp);
  }
}

void quantize_affine(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                     const float* scale, DType scale_dtype, const int32_t* zero_point,
                     IntFormat fmt, void* q) {
  check_fmt(fmt);
  detail::check_float_input(x_dtype, "quantize_affine");
  detail::check_float_input(scale_dtype, "quantize_affine (scale)");
  check_block(n, k, block, "quantize_affine");
  const DType cdt =
      (x_dtype == DType::bf16 && scale_dtype == DType::bf16) ? DType::bf16 : DType::f32;
  detail::quantize_affine_rows(x, x_dtype, n, k, block, scale, Rounder(scale_dtype), zero_point,
                               fmt, Rounder(cdt), static_cast<uint8_t*>(q));
}

void dequantize_affine(const void* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                       const float* scale, const int32_t* zero_point, void* out, DType out_dtype) {
  check_fmt(fmt);
  detail::check_float_input(out_dtype, "dequantize_affine (output)");
  check_block(n, k, block, "dequantize_affine");
  detail::dequantize_affine_rows(static_cast<const uint8_t*>(q), fmt, n, k, block, scale,
                                 zero_point, out, out_dtype);
}

void choose_qparams_affine_tinygemm(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                                    IntFormat fmt, float* scale, float* zero,
                                    std::optional<float> eps) {
  check_fmt(fmt);
  detail::check_float_input(x_dtype, "choose_qparams_affine_tinygemm");
  const int64_t nb = check_block(n, k, block, "choose_qparams_affine_tinygemm");
  const Rounder R(x_dtype);
  std::vector<float> mn(nb, std::numeric_limits<float>::infinity()),
      mx(nb, -std::numeric_limits<float>::infinity());
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    for (int64_t c = 0; c < k / block.cols; ++c) {
      const int64_t bi = (r / block.rows) * (k / block.cols) + c;
      detail::min_max(row.data() + c * block.cols, block.cols, &mn[bi], &mx[bi]);
    }
  }
  const float e = eps ? *eps : std::ldexp(1.0f, -126);
  const float mid = (fmt.qmax() + fmt.qmin() + 1) / 2.0f;
  for (int64_t b = 0; b < nb; ++b) {
    float s = R(R(mx[b] - mn[b]) / static_cast<float>(fmt.qmax() - fmt.qmin()));
    s = R(detail::clamp_min(s, e));
    scale[b] = s;
    zero[b] = R(mn[b] + R(s * mid));
  }
}

void quantize_affine_tinygemm(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                              const float* scale, const float* zero, DType qparam_dtype,
                              IntFormat fmt, uint8_t* q) {
  check_fmt(fmt);
  detail::check_float_input(x_dtype, "quantize_affine_tinygemm");
  detail::check_float_input(qparam_dtype, "quantize_affine_tinygemm (scale)");
  check_block(n, k, block, "quantize_affine_tinygemm");
  const Rounder R((x_dtype == DType::bf16 && qparam_dtype == DType::bf16) ? DType::bf16
                                                                          : DType::f32);
  const Rounder Rq(qparam_dtype);
  const float mid = (fmt.qmax() + fmt.qmin() + 1) / 2.0f;
  const float qmin = static_cast<float>(fmt.qmin()), qmax = static_cast<float>(fmt.qmax());
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    for (int64_t c = 0; c < k / block.cols; ++c) {
      const int64_t bi = (r / block.rows) * (k / block.cols) + c;
      const float s = scale[bi];
      const float min_val = Rq(zero[bi] - Rq(s * mid));
      for (int64_t j = c * block.cols; j < (c + 1) * block.cols; ++j) {
        const float v = std::nearbyint(R(R(row[j] - min_val) / s));
        q[r * k + j] = static_cast<uint8_t>(static_cast<int>(std::clamp(v, qmin, qmax)));
      }
    }
  }
}

void dequantize_affine_tinygemm(const uint8_t* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                                const float* scale, const float* zero, void* out, DType out_dtype) {
  check_fmt(fmt);
  detail::check_float_input(out_dtype, "dequantize_affine_tinygemm (output)");
  check_block(n, k, block, "dequantize_affine_tinygemm");
  const Rounder R(out_dtype);
  const float mid = (fmt.qmax() + fmt.qmin() + 1) / 2.0f;
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t bi = (r / block.rows) * (k / block.cols) + j / block.cols;
      const float d = R(static_cast<float>(q[r * k + j]) - mid);
      row[j] = R(R(d * scale[bi]) + zero[bi]);
    }
    detail::store_row(row.data(), out, out_dtype, r, k);
  }
}

void int4_row_quantize_zp(const void* x, DType x_dtype, int64_t n, int64_t k, int64_t group_size,
                          int8_t* q, float* scale_t, float* zero_t, DType scale_dtype) {
  detail::check_float_input(x_dtype, "int4_row_quantize_zp");
  detail::check_float_input(scale_dtype, "int4_row_quantize_zp (scale)");
  check_block(n, k, Block{1, group_size}, "int4_row_quantize_zp");
  const int64_t ng = k / group_size;
  const Rounder Rs(scale_dtype);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    detail::load_row(x, x_dtype, r, k, row.data());
    for (int64_t g = 0; g < ng; ++g) {
      float mn = std::numeric_limits<float>::infinity(), mx = -mn;
      detail::min_max(row.data() + g * group_size, group_size, &mn, &mx);
      const float s = detail::clamp_min(mx - mn, 1e-6f) / 15.0f;
      const float z = mn + s * 8.0f;
      for (int64_t j = g * group_size; j < (g + 1) * group_size; ++j) {
        const float v = std::clamp(std::nearbyint((row[j] - mn) / s), 0.0f, 15.0f);
        q[r * k + j] = static_cast<int8_t>(static_cast<int>(v) - 8);
      }
      scale_t[g * n + r] = Rs(s);
      zero_t[g * n + r] = Rs(z);
    }
  }
}

void int4_row_dequantize_zp(const int8_t* q, int64_t n, int64_t k, int64_t group_size,
                            const float* scale_t, const float* zero_t, void* out, DType out_dtype) {
  detail::check_float_input(out_dtype, "int4_row_dequantize_zp (output)");
  check_block(n, k, Block{1, group_size}, "int4_row_dequantize_zp");
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t g = j / group_size;
      const float prod = static_cast<float>(q[r * k + j]) * scale_t[g * n + r];
      row[j] = prod + zero_t[g * n + r];
    }
    detail::store_row(row.data(), out, out_dtype, r, k);
  }
}

}  // namespace ao::formats

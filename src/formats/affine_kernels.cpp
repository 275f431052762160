// Affine row kernels: the scalar reference and the dispatch to the AVX2 versions.
#include <algorithm>
#include <vector>

#include "formats/math_util.h"

namespace ao::formats::detail {

void quantize_affine_segment_ref(const AffineSegment& s, const float* x, int64_t len, uint8_t* q) {
  const Rounder R(s.bf16 ? DType::bf16 : DType::f32);
  for (int64_t j = 0; j < len; ++j) {
    float v = std::nearbyint(R(x[j] * s.inv_scale));
    if (s.has_zp) v = R(v + s.zp);
    v = std::clamp(v, s.qmin, s.qmax);
    // NaN (only from NaN inputs; PyTorch's int cast of NaN is unspecified) -> 0.
    const int iv = v != v ? 0 : static_cast<int>(v);
    q[j] = static_cast<uint8_t>(iv);
  }
}

void dequantize_affine_segment_ref(const uint8_t* q, bool is_signed, float zp, float scale,
                                   int64_t len, float* out) {
  for (int64_t j = 0; j < len; ++j) {
    const float v =
        is_signed ? static_cast<float>(static_cast<int8_t>(q[j])) : static_cast<float>(q[j]);
    out[j] = (v - zp) * scale;
  }
}

void quantize_affine_rows(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                          const float* scale, Rounder scale_round, const int32_t* zero_point,
                          IntFormat fmt, Rounder compute, uint8_t* q) {
  const bool simd = formats_use_avx2();
  std::vector<float> row(k);
  const int64_t bpr = k / block.cols;
  for (int64_t r = 0; r < n; ++r) {
    load_row(x, x_dtype, r, k, row.data());
    for (int64_t c = 0; c < bpr; ++c) {
      const int64_t bi = (r / block.rows) * bpr + c;
      AffineSegment s{scale_round(1.0f / scale[bi]),
                      zero_point ? static_cast<float>(zero_point[bi]) : 0.0f,
                      zero_point != nullptr,
                      static_cast<float>(fmt.qmin()),
                      static_cast<float>(fmt.qmax()),
                      compute.bf16,
                      fmt.is_signed};
      const float* xs = row.data() + c * block.cols;
      uint8_t* qs = q + r * k + c * block.cols;
      if (simd)
        quantize_affine_segment_avx2(s, xs, block.cols, qs);
      else
        quantize_affine_segment_ref(s, xs, block.cols, qs);
    }
  }
}

void dequantize_affine_rows(const uint8_t* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                            const float* scale, const int32_t* zero_point, void* out,
                            DType out_dtype) {
  const bool simd = formats_use_avx2();
  std::vector<float> row(k);
  const int64_t bpr = k / block.cols;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < bpr; ++c) {
      const int64_t bi = (r / block.rows) * bpr + c;
      const float zp = zero_point ? static_cast<float>(zero_point[bi]) : 0.0f;
      const uint8_t* qs = q + r * k + c * block.cols;
      float* os = row.data() + c * block.cols;
      if (simd)
        dequantize_affine_segment_avx2(qs, fmt.is_signed, zp, scale[bi], block.cols, os);
      else
        dequantize_affine_segment_ref(qs, fmt.is_signed, zp, scale[bi], block.cols, os);
    }
    store_row(row.data(), out, out_dtype, r, k);
  }
}

}  // namespace ao::formats::detail

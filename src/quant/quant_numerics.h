// Scalar numerics the quantized tensor types need, matching TorchAO 0.18's reference
// (PyTorch) implementations bit for bit (NUMERICS.md; checked against TorchAO fixtures in
// tests/quant). Element codecs delegate to ao/formats; the block-level rules (affine qparams
// per group, MX scale selection, swizzled scale layout) live here. Private to src/quant.
#pragma once

#include <cmath>
#include <cstdint>

namespace ao::quant::detail {

enum class Mapping { symmetric, asymmetric };

// choose_qparams_affine over one block (fp32 math, TorchAO's order of operations).
struct AffineParams {
  float scale;
  int32_t zero_point;
};
AffineParams choose_affine_params(const float* x, int64_t n, Mapping mapping, int qmin, int qmax,
                                  float eps);
// q = clamp(round_half_even(x * (1 / scale)) + zp, qmin, qmax)
inline int32_t quantize_affine_value(float x, float inv_scale, int32_t zp, int qmin, int qmax) {
  float q = std::nearbyint(x * inv_scale) + static_cast<float>(zp);
  q = q < qmin ? static_cast<float>(qmin) : (q > qmax ? static_cast<float>(qmax) : q);
  return static_cast<int32_t>(q);
}
constexpr float kF32Eps = 1.1920928955078125e-07f;             // torch.finfo(float32).eps
constexpr float kF32SmallestNormal = 1.1754943508222875e-38f;  // torch.finfo(float32).tiny

// Quantize-then-dequantize each row of x [M, K] in place with int8 per-token scales, the
// way TorchAO quantizes activations dynamically (symmetric: Int8Tensor, eps = fp32 eps;
// asymmetric: IntxUnpackedToInt8Tensor's int8_asym_per_token).
void fake_quantize_int8_per_token(float* x, int64_t M, int64_t K, Mapping mapping);
// The same quantization kept in integers for the int8 x int8 kernels: xq [M, K] holds
// q - zero_point (int16, |value| <= 255) and scale [M] the per-token scales, so that
// float(xq) * scale is exactly fake_quantize_int8_per_token's value.
void quantize_int8_per_token(const float* x, int64_t M, int64_t K, Mapping mapping, int16_t* xq,
                             float* scale);

// Small floats (fp8 e4m3fn / e5m2, fp6 e2m3 / e3m2, fp4 e2m1) through ao/formats: round to
// nearest even, saturating to +-max, subnormals supported.
struct MiniFloat {
  int ebits, mbits;
  float max;
  bool has_nan_code;  // e4m3fn: S.1111.111 is NaN; e5m2 has IEEE inf/NaN; fp4/fp6 none
};
constexpr MiniFloat kE4M3{4, 3, 448.0f, true};
constexpr MiniFloat kE5M2{5, 2, 57344.0f, true};
constexpr MiniFloat kE2M3{2, 3, 7.5f, false};
constexpr MiniFloat kE3M2{3, 2, 28.0f, false};
constexpr MiniFloat kE2M1{2, 1, 6.0f, false};
uint8_t encode_minifloat(float x, const MiniFloat& f);
float decode_minifloat(uint8_t code, const MiniFloat& f);
// decode_minifloat for every code (256 entries; codes beyond the format's width unused),
// built once per format: the dequantization kernels index it.
const float* minifloat_table(const MiniFloat& f);

// E8M0 (MX scale): 2^(s - 127); 255 = NaN.
float e8m0_to_float(uint8_t s);
enum class MxScaling { floor, rceil };
// Biased block exponent for amax per TorchAO's to_mx (FLOOR) or _to_mx_rceil (RCEIL).
uint8_t mx_block_exponent(float amax, const MiniFloat& elem, int elem_emax, MxScaling mode);

// Index of scale (row, col) of a [rows, cols] scale matrix in the cuBLAS blocked ("swizzled")
// layout: 128x4 tiles, padded; see torchao/prototype/mx_formats/utils.py:to_blocked.
inline int64_t swizzled_index(int64_t row, int64_t col, int64_t cols) {
  const int64_t col_blocks = (cols + 3) / 4;
  const int64_t blk = (row / 128) * col_blocks + col / 4;
  const int64_t r = row % 128;
  return blk * 512 + (r % 32) * 16 + (r / 32) * 4 + col % 4;
}
inline int64_t swizzled_size(int64_t rows, int64_t cols) {
  return ((rows + 127) / 128) * 128 * ((cols + 3) / 4) * 4;
}

}  // namespace ao::quant::detail

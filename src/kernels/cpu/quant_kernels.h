// CPU kernels for quantized linear layers: fused dequantize-dot (GEMV) for decode, with a
// scalar reference and AVX2/FMA versions picked at run time. Kernels do not validate;
// the quantized tensor types do.
#pragma once

#include <cstdint>

namespace ao::kernels::cpu::quant {

bool cpu_has_avx2();

float dot_f32(const float* a, const float* b, int64_t n);

// One-int8-per-element weights (Int8Tensor, IntxUnpackedToInt8Tensor): q [N, K] int8,
// scale / zero_point [N, K / group] (f32 / int8); w = (q - zp) * scale.
// y[m * ldy + (n - n0)] = sum_k x[m * K + k] * w[n, k] for n in [n0, n1), m < M.
struct AffineInt8Weight {
  const int8_t* q;
  const float* scale;
  const int8_t* zero_point;
  int64_t K, group;
};
void gemv_affine_int8(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                      float* y, int64_t ldy);
void gemv_affine_int8_ref(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0,
                          int64_t n1, float* y, int64_t ldy);

// Dynamically quantized activations times AffineInt8Weight, in integers (TorchAO's
// Int8DynamicActivationInt8WeightConfig semantics: int32 dot products, then the scales).
// xq: [M, K] int16 holding (q_x - zp_x) per token (|value| <= 255); x_scale: [M].
// Per (row n, group g): acc = sum_k xq[m, k] * (q[n, k] - zp[n, g]) exactly in int32, and
//   y[m * ldy + (n - n0)] = sum_g (float(acc) * x_scale[m]) * scale[n, g]   (f32, g in order)
// — for one group exactly TorchAO's int_scaled_matmul(x_int8, w_int8.t(), x_scale) * w_scale.
// Exact while group * 255 * 255 < 2^31 (callers check int8_int8_exact_group()).
inline bool int8_int8_exact_group(int64_t group) { return group <= 33000; }
void gemm_int8_int8(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale, int64_t M,
                    int64_t n0, int64_t n1, float* y, int64_t ldy);
void gemm_int8_int8_ref(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale,
                        int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy);

// Plain Int4Tensor: q [N, K / 2] bytes, element 2i in the low nibble, values in [-8, 7];
// scale / zero [ceil(K / group), N] (f32, transposed); w = q * scale + zero. K and group are
// even; the last group may be partial (Int4TilePackedTo4dTensor, whose groups cover padding).
struct Int4PlainWeight {
  const uint8_t* q;
  const float* scale;
  const float* zero;
  int64_t N, K, group;
};
void gemv_int4_plain(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                     float* y, int64_t ldy);
void gemv_int4_plain_ref(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0,
                         int64_t n1, float* y, int64_t ldy);

namespace avx2 {
float dot_f32(const float* a, const float* b, int64_t n);
void gemv_affine_int8(const AffineInt8Weight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                      float* y, int64_t ldy);
void gemv_int4_plain(const Int4PlainWeight& w, const float* x, int64_t M, int64_t n0, int64_t n1,
                     float* y, int64_t ldy);
void gemm_int8_int8(const AffineInt8Weight& w, const int16_t* xq, const float* x_scale, int64_t M,
                    int64_t n0, int64_t n1, float* y, int64_t ldy);
}  // namespace avx2

}  // namespace ao::kernels::cpu::quant

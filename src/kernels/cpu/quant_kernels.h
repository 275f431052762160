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

// Plain Int4Tensor: q [N, K / 2] bytes, element 2i in the low nibble, values in [-8, 7];
// scale / zero [K / group, N] (f32, transposed); w = q * scale + zero.
// Plain int4 (Int4Tensor layout): q [N, K/2] signed nibbles (element 2i low), scale and zero
// [ceil(K/group), N]; K and group even, the last group may be partial.
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
}  // namespace avx2

}  // namespace ao::kernels::cpu::quant

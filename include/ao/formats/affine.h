// Affine integer quantization (int1..int8, uint1..uint8) bit-exact with TorchAO 0.18's
// quant_primitives.py: choose_qparams_affine / quantize_affine / dequantize_affine, the
// tinygemm float-zero-point variants, and the plain Int4Tensor (mslk) int4 quantizer.
//
// Inputs are 2-D row-major weights or activations x[N, K] in f32 or bf16. TorchAO computes
// in the input's dtype: for bf16 inputs every intermediate is rounded to bf16 after each
// operation, exactly as PyTorch's CPU kernels do; we do the same (see docs/FORMATS.md).
//
// Granularity is TorchAO's block_size for a 2-D tensor: Block{rows, cols}. Per-tensor =
// {N, K}, per-row / per-channel / per-token = {1, K}, per-group g = {1, g}; any block whose
// sides divide N and K works. Scale / zero-point buffers hold one value per block, laid out
// row-major as [N / rows, K / cols] (TorchAO's choose_qparams_affine output, keepdim=False).
//
// Quantized values are one per byte: signed formats as int8 two's complement, unsigned as
// uint8 (bit packing lives in ao/formats/packing.h).
#pragma once

#include <cstdint>
#include <optional>

#include "ao/core/dtype.h"

namespace ao::formats {

enum class MappingType : uint8_t { symmetric, symmetric_no_clipping_err, asymmetric };
const char* mapping_type_name(MappingType m);  // TorchAO's names: "SYMMETRIC", ...

// An integer element format: intN [-2^(N-1), 2^(N-1)-1] or uintN [0, 2^N-1], N in 1..8,
// optionally narrowed to [quant_min, quant_max] (TorchAO's quant_min / quant_max arguments,
// e.g. Int8Tensor's reduce_range = [-64, 63]).
struct IntFormat {
  int bits = 8;
  bool is_signed = true;
  int range_min = 0, range_max = 0;  // used when range_min < range_max
  int qmin() const {
    return range_min < range_max ? range_min : (is_signed ? -(1 << (bits - 1)) : 0);
  }
  int qmax() const {
    return range_min < range_max ? range_max
                                 : (is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1);
  }
};
// Validates the width (1..8); throws ao::Error otherwise.
IntFormat int_format(int bits, bool is_signed);
// The same format restricted to [quant_min, quant_max]; throws unless
// full.qmin() <= quant_min < quant_max <= full.qmax().
IntFormat int_format_range(int bits, bool is_signed, int quant_min, int quant_max);

// TorchAO block_size for a 2-D tensor.
struct Block {
  int64_t rows = 1, cols = 1;
  static Block per_tensor(int64_t n, int64_t k) { return {n, k}; }
  static Block per_row(int64_t k) { return {1, k}; }
  static Block per_token(int64_t k) { return {1, k}; }
  static Block per_group(int64_t group_size) { return {1, group_size}; }
};
// Throws ao::Error unless the block is positive and divides [n, k]; returns the number of
// blocks (= scale buffer length).
int64_t check_block(int64_t n, int64_t k, Block b, const char* what);

struct AffineOptions {
  // dtype the scale is returned in (TorchAO scale_dtype): f32 or bf16; default = input dtype.
  // Int8Tensor passes f32. bf16 scales are returned as floats holding bf16 values.
  std::optional<DType> scale_dtype;
  // minimum scale; default = smallest normal of the input dtype (2^-126 for f32 and bf16).
  // Int8Tensor passes float32 machine eps (2^-23).
  std::optional<float> eps;
};

// choose_qparams_affine: scale[N/rows * K/cols] and zero_point (same length). For the
// symmetric mappings zero_point is TorchAO's int((qmax + qmin + 1) / 2) (0 for intN).
void choose_qparams_affine(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                           MappingType mapping, IntFormat fmt, float* scale, int32_t* zero_point,
                           const AffineOptions& options = {});

// quantize_affine: q = clamp(round(x * (1 / scale)) + zero_point, qmin, qmax). Arithmetic
// is done in bf16 when both x and the scale are bf16, else in f32 (PyTorch promotion).
// zero_point may be null (zero-point domain NONE).
void quantize_affine(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                     const float* scale, DType scale_dtype, const int32_t* zero_point,
                     IntFormat fmt, void* q);

// dequantize_affine: out = (q - zero_point) * scale, written as out_dtype (f32 or bf16).
void dequantize_affine(const void* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                       const float* scale, const int32_t* zero_point, void* out, DType out_dtype);

// ---- float zero-point domain (tinygemm int4 and friends) ---------------------------------
// _choose_qparams_affine_tinygemm (ASYMMETRIC, no zero preservation), unsigned formats:
//   scale = clamp((max - min) / (qmax - qmin), eps), zero = min + scale * mid,
//   mid = (qmax + qmin + 1) / 2. Computed in the input dtype; `scale`/`zero` hold values
//   of that dtype (Int4TilePackedTo4dTensor stores them as bf16).
void choose_qparams_affine_tinygemm(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                                    IntFormat fmt, float* scale, float* zero,
                                    std::optional<float> eps = std::nullopt);
// q = clamp(round((x - (zero - scale * mid)) / scale), qmin, qmax) as uint8; `qparam_dtype`
// is the dtype scale/zero are held in (arithmetic in bf16 only if x and they are bf16).
void quantize_affine_tinygemm(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                              const float* scale, const float* zero, DType qparam_dtype,
                              IntFormat fmt, uint8_t* q);
// out = (q - mid) * scale + zero, each step rounded to out_dtype.
void dequantize_affine_tinygemm(const uint8_t* q, IntFormat fmt, int64_t n, int64_t k, Block block,
                                const float* scale, const float* zero, void* out, DType out_dtype);

// ---- plain Int4Tensor (mslk int4_row_quantize_zp, fp32 math) ------------------------------
// Per group g along K: scale = clamp(max - min, 1e-6) / 15, zero = min + 8 * scale,
// q = clamp(round((x - min) / scale), 0, 15) - 8 in [-8, 7] (int8, one per byte).
// scale and zero are written TRANSPOSED, [K/g, N] row-major, as Int4Tensor stores them;
// with scale_dtype bf16 they are rounded to bf16 (Int4Tensor keeps them in the weight dtype).
void int4_row_quantize_zp(const void* x, DType x_dtype, int64_t n, int64_t k, int64_t group_size,
                          int8_t* q, float* scale_t, float* zero_t, DType scale_dtype);

// Dequantizes the plain Int4Tensor layout: out = q * scale + zero (f32 math, no FMA), the
// value the int4 GEMM kernels reconstruct ((q + 8) * scale + min). TorchAO has no reference
// dequantize for this type, so this one is ours, not a bit-exact copy.
void int4_row_dequantize_zp(const int8_t* q, int64_t n, int64_t k, int64_t group_size,
                            const float* scale_t, const float* zero_t, void* out, DType out_dtype);

}  // namespace ao::formats

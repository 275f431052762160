// Float8 scaling, bit-exact with TorchAO 0.18, for 2-D row-major x[N, K] (f32 or bf16).
//
// Two conventions exist and they are inverses of each other:
//  - Inference (Float8Tensor, quant_primitives._choose_scale_float8 /
//    _quantize_affine_float8): scale = amax / fp8_max, computed in the input dtype (so a
//    bf16 input gives a bf16-rounded scale), returned as f32;
//    q = cast(clamp(x_f32 / scale, +-max)); dequantize: q * scale.
//    An all-zero block has scale 0 and TorchAO computes 0/0: its codes are NaN (0x7F/0xFF
//    for e4m3fn). We reproduce that; callers that want zeros must pass hp_value_lb.
//  - Training (float8 training, float8_utils.amax_to_scale): scale = fp8_max /
//    max(amax, 1e-12) in float64, then to f32, optionally rounded down to a power of two
//    (exp2(floor(log2(scale)))); q = cast(clamp(x_f32 * scale, +-max)); dequantize q / scale.
//
// Granularity is a Block (see affine.h): per-tensor {N, K}, per-row {1, K}, 1x128 {1, 128},
// 128x128 {128, 128}. Scales are laid out [N / rows, K / cols] row-major. Codes are one byte
// per element, row-major [N, K] (torch.float8_e4m3fn / e5m2 bytes).
#pragma once

#include <cstdint>
#include <optional>

#include "ao/core/dtype.h"
#include "ao/formats/affine.h"
#include "ao/formats/float_formats.h"

namespace ao::formats {

// Optional clamp of amax before the scale is computed (Float8Tensor hp_value_lb / _ub).
struct AmaxBounds {
  std::optional<float> lb, ub;
};

// ---- inference convention ---------------------------------------------------------------
void float8_choose_scale(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                         FloatFormat fp8, float* scale, const AmaxBounds& bounds = {});
void float8_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                     FloatFormat fp8, const float* scale, uint8_t* q);
void float8_dequantize(const uint8_t* q, int64_t n, int64_t k, Block block, FloatFormat fp8,
                       const float* scale, void* out, DType out_dtype);

// ---- training convention ----------------------------------------------------------------
// amax (of |x|, any float) -> scale, as float8_utils.amax_to_scale.
float float8_training_scale_from_amax(float amax, FloatFormat fp8, bool round_to_pow2);
void float8_training_scale(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                           FloatFormat fp8, bool round_to_pow2, float* scale);
void float8_training_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, Block block,
                              FloatFormat fp8, const float* scale, uint8_t* q);
// out = q / scale (f32), stored as out_dtype.
void float8_training_dequantize(const uint8_t* q, int64_t n, int64_t k, Block block,
                                FloatFormat fp8, const float* scale, void* out, DType out_dtype);

}  // namespace ao::formats

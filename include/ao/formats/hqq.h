// HQQ (half-quadratic quantization) qparams for int4 weight-only, as TorchAO 0.18 computes
// them for Int4WeightOnlyConfig(group_size=g, int4_choose_qparams_algorithm="hqq")
// (Int4TilePackedTo4dTensor.from_hp -> quant_primitives._choose_qparams_and_quantize_affine_hqq
// with nbits=4, axis=1, compute_dtype = the weight dtype, raw_output=False, and the default
// optimizer optimize_weights_proximal_legacy: lp_norm 0.7, beta 10, kappa 1.01, 20 iterations,
// early stop when the mean |W - W_r| over the WHOLE tensor stops decreasing).
//
// Per group of g consecutive elements along K (min/max in f32):
//   s = min(15 * (1 / (max - min)), 2e4), z = round(-min * s)        (hqq: W ~ (q - z) / s)
//   repeat: q = clamp(round(W * s + z), 0, 15); W_r = (q - z) / s;
//           W_e = shrink_lp(W - W_r, beta); z = mean_g(q - (W - W_e) * s); beta *= kappa
//   q = clamp(round(W * s + z), 0, 15)   with the last z (also after an early stop)
// and the result in the tinygemm convention (dequant = (q - 8) * scale + zero):
//   scale = 1 / s, zero = (8 - z) * scale, both rounded to the weight dtype.
//
// TorchAO runs the optimizer in the dtype of its device: float32 for a CPU tensor,
// float16 for a CUDA tensor (optimize_weights_proximal_legacy's default). Both are provided
// (HqqBackend). Exactness: see docs/FORMATS.md ("HQQ"). Call it on the weight as TorchAO
// quantizes it: Int4TilePackedTo4dTensor pads K to a multiple of 1024 and N to a multiple of
// 8 with zeros first, and the padding takes part in the early-stop error.
#pragma once

#include <cstdint>

#include "ao/core/dtype.h"

namespace ao::formats {

enum class HqqBackend : uint8_t {
  cpu,   // TorchAO on a CPU tensor: optimizer in float32, torch's CPU reduction order
  cuda,  // TorchAO on a CUDA tensor: optimizer in float16 (each op rounded to fp16)
};

struct HqqOptions {
  HqqBackend backend = HqqBackend::cpu;
  bool optimize = true;  // false: round-to-nearest with the initial s, z (TorchAO optimize=False)
  int iters = 20;
  bool early_stop = true;
  double lp_norm = 0.7, beta = 10.0, kappa = 1.01;
};

struct HqqStats {
  int iterations = 0;     // optimizer steps run (early stop included)
  double last_error = 0;  // mean |W - W_r| of the last step, as TorchAO computes it
};

// x: [N, K] row-major f32 or bf16. q: [N, K] uint4 codes 0..15, one per byte.
// scale, zero: [N, K/g] row-major (one per group), values of the weight dtype held in floats
// (bf16 inputs: exact bf16 values; write them with f32_to_bf16_rne). Throws ao::Error on a
// dtype other than f32/bf16, g < 2 or g not dividing K, or bad option values.
HqqStats hqq_quantize_int4(const void* x, DType x_dtype, int64_t n, int64_t k, int64_t group_size,
                           uint8_t* q, float* scale, float* zero, const HqqOptions& options = {});

}  // namespace ao::formats

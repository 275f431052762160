// TorchAO's dynamic fp8 activation quantization, element by element. Shared by the activation
// quantizer (quantize.cu, before the cuBLASLt FP8 GEMM) and the fp8 GEMV's prologue, so prefill
// and decode produce the same codes for the same row.
#pragma once

#include <cuda_fp8.h>

#include "common.cuh"

namespace ao::cuda::detail {

constexpr float kE4M3Max = 448.f;

// TorchAO's _choose_scale_float8 on a bf16 tensor: amax / 448 in f32, rounded to bf16, returned
// as f32. (PyTorch's CUDA kernel multiplies by the f32 reciprocal of 448 instead of dividing;
// after the bf16 rounding the two differ only when the f32 results straddle a bf16 rounding
// boundary. The division matches the CPU implementation in src/formats bit for bit.)
__device__ __forceinline__ float fp8_activation_scale(float amax) {
  return round_bf16(amax / kE4M3Max);
}

// _quantize_affine_float8: e4m3(clamp(x / scale, +-448)), round to nearest even. scale 0 only
// happens for an all-zero block (x = +-0): its codes are +-0 instead of TorchAO's 0/0 = NaN.
__device__ __forceinline__ __nv_fp8_storage_t fp8_activation_code(float x, float scale) {
  const float v = scale > 0.f ? fminf(fmaxf(x / scale, -kE4M3Max), kE4M3Max) : x;
  return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

__device__ __forceinline__ float e4m3_to_float(__nv_fp8_storage_t q) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(q, __NV_E4M3);
  return __half2float(__half(h));
}

// This thread's part of max |x| over a bf16 row of k elements (combine with block_max).
__device__ __forceinline__ float row_abs_max_part(const uint16_t* x, int64_t k) {
  float m = 0.f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
    m = fmaxf(m, fabsf(bf16_bits_to_float(x[i])));
  return m;
}

}  // namespace ao::cuda::detail

// FP8 (e4m3) GEMM through cuBLASLt, the prefill half of dynamic-activation fp8
// (Float8DynamicActivationFloat8WeightConfig): what torch._scaled_mm computes,
//   y [M, N] bf16 = (qa [M, K] . qw [N, K]^T) * scale_a[m] * scale_w[n]   (fp32 accumulation),
// with qa from quantize_activation_fp8 and qw an fp8 DeviceWeight. Hopper FP8 kernels need the
// "TN" layout: the weight (row-major [N, Kp]) is the column-major Kp x N matrix A with op T, the
// activations (row-major [M, Kp]) the column-major Kp x M matrix B with op N, and the output the
// column-major N x M matrix D = row-major [M, N].
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda {

// How the scales were applied (Fp8Gemm::last_path()).
enum class Fp8GemmPath {
  none = 0,             // nothing ran yet
  scalar_scales,        // per-tensor: CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F on A and B
  outer_vector_scales,  // per-row: CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F (N and M vectors)
  epilogue_scales,      // cuBLASLt had no kernel for the above: unscaled FP8 GEMM into f32, then
                        // apply_outer_scales (one more pass over the output)
};
const char* fp8_gemm_path_name(Fp8GemmPath p);

struct Fp8GemmOptions {
  // TorchAO's Float8MMConfig default for inference (use_fast_accum=True): the tensor cores'
  // FP8 accumulator is not periodically promoted to full fp32.
  bool fast_accum = true;
  // Always take the epilogue path (tests of the fallback).
  bool force_epilogue = false;
  size_t workspace_bytes = size_t(32) << 20;
};

// One cuBLASLt handle, a workspace allocated once, and a plan (descriptors + heuristic
// algorithm) cached per (M, N, K, scaling, path). Not thread-safe; enqueues on the caller's
// stream. Throws ao::Error when neither path has an algorithm (e.g. a GPU without FP8).
class Fp8Gemm {
 public:
  explicit Fp8Gemm(const Fp8GemmOptions& options = {});
  ~Fp8Gemm();
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;

  // w: fp8 weight, k_padded a multiple of 16 with zero padding; qa: e4m3 [m, w.k_padded]
  // (row stride w.k_padded, zero beyond w.k), 16-byte aligned; a_scale: device f32 [m]; y:
  // bf16 [m, w.n]. per_tensor: cuBLASLt reads the scalars a_scale[0] and w.scale[0]; needs
  // w.per_tensor_scale and m equal values in a_scale (as quantize_activation_fp8 writes them
  // for ActQuant::fp8_tensor; the epilogue path reads the vectors). Otherwise the vectors
  // a_scale[m] and w.scale[n] (any weight, per-tensor activations included).
  void run(const DeviceWeight& w, const uint8_t* qa, const float* a_scale, int m, bool per_tensor,
           uint16_t* y, cudaStream_t s);
  Fp8GemmPath last_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ao::cuda

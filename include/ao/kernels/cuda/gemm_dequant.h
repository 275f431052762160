// Prefill GEMM of a weight-only quantized weight (int8, int4, fp8) through cuBLAS (with a bf16
// output on sm_90: fused instead, see DequantGemmTuning::fused):
//   y [M, N] = x [M, K] (bf16) . dequantize(W)^T   (bf16 operands, fp32 accumulation),
// the weight dequantized to a bf16 scratch first. A weight whose bf16 copy is larger than
// DequantGemmTuning::chunk_bytes goes in chunks of rows, each dequantized and then multiplied,
// so the scratch stays at that size: llama3-8b's lm_head (the all-position logits of `ao
// perplexity`) would need 1.05 GB, its largest linear layer 235 MB. Chunks small enough to stay
// in L2 were measured slower: cuBLAS is less efficient on the narrower GEMMs than the HBM round
// trip of the copy costs (docs/CUDA.md lab note 94). bf16 weights go straight to cuBLAS.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda {

struct DequantGemmTuning {
  // Largest bf16 copy of one chunk, in bytes; a weight whose whole copy fits is one chunk.
  // <= 0: the whole weight at once (a scratch of the largest weight's size). 256 MB holds every
  // linear layer of the 7-8B shapes but Qwen2.5-7B's gate_up (271 MB, two chunks) whole.
  int64_t chunk_bytes = int64_t{256} << 20;
  // int4 weights of groups of 64-256, int8 and weight-only fp8 weights (n a multiple of 8, k of
  // 64 / 16) multiply bf16 x into a bf16 y without the copy, on CUTLASS's mixed-input GEMM
  // (src/kernels/cuda/mixed_input_gemm.h), where the build has it and the GPU is sm_90; off:
  // every quantized weight takes the bf16 copy (lab A/B).
  bool fused = true;
};
// Whether this build has the fused GEMMs (CUTLASS) and the current GPU runs them (sm_90).
bool fused_gemm_available();
void set_dequant_gemm_tuning(const DequantGemmTuning& t);
DequantGemmTuning dequant_gemm_tuning();

struct DequantChunks {
  int64_t rows = 0;   // rows per chunk (the last may have fewer)
  int64_t count = 0;  // chunks
};
// The chunks of an [n, k_padded] weight: one when its bf16 copy fits chunk_bytes (or
// chunk_bytes <= 0); else the fewest chunks of at most chunk_bytes each (but at least 128 rows),
// balanced: rows = ceil(n / count) rounded up to a multiple of 128.
DequantChunks plan_dequant_chunks(int64_t n, int64_t k_padded, int64_t chunk_bytes);

// Owns the scratch. Not thread-safe; enqueues on the caller's stream.
class DequantGemm {
 public:
  DequantGemm();
  ~DequantGemm();
  DequantGemm(const DequantGemm&) = delete;
  DequantGemm& operator=(const DequantGemm&) = delete;

  // Allocates now whatever run() needs for w's bf16 outputs under the tuning in force, so that
  // prefill does not allocate: the bf16 scratch, or for a weight that takes the fused GEMM its
  // scale planes (int4: int4_scale_planes, ~3% of the weight's bytes; int8 / fp8: one bf16 scale
  // per row, row_scale_plane). run() allocates what an f32
  // output of a fused weight needs (the all-position logits) on its first such call, and grows
  // the scratch after a tuning change.
  void reserve(const DeviceWeight& w);
  size_t scratch_bytes() const;
  size_t plane_bytes() const;  // the fused weights' scale planes
  // Whether run() multiplies w into a bf16 y without the bf16 copy (after reserve(w)).
  bool fused(const DeviceWeight& w) const;
  // y [m, N] of out_type (CUDA_R_16BF or CUDA_R_32F, row stride N) = x [m, K] bf16 (row stride
  // K) . W^T. `h` must be bound to `s`.
  void run(cublasHandle_t h, const DeviceWeight& w, const uint16_t* x, int m, void* y,
           cudaDataType out_type, cudaStream_t s);

 private:
  struct Planes {
    uint16_t* s = nullptr;  // int4: [Kp/g][ld] bf16, then z [Kp/g][ld]; else [1][ld]
    int64_t ld = 0;
    size_t bytes = 0;
    // The weight it was made for (a weight's planes are made once: one whose scales change in
    // place, or that is freed and replaced at the same address and scale address, needs a new
    // DequantGemm).
    WeightFormat format = WeightFormat::bf16;
    const void* scale = nullptr;
    int64_t n = 0, k_padded = 0;
    int group_size = 0;
  };
  bool takes_fused(const DeviceWeight& w) const;
  void reserve_scratch(const DeviceWeight& w);
  uint16_t* scratch_ = nullptr;
  size_t cap_elems_ = 0;
  bool fused_device_ = false;  // this build has the fused GEMMs and the GPU runs them
  std::unordered_map<const void*, Planes> planes_;  // by the weight's data pointer
};

}  // namespace ao::cuda

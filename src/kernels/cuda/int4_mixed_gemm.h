// The prefill GEMM of an int4 weight without a bf16 copy: CUTLASS's sm90 mixed-input GEMM
// (`sm90_mma_tma_gmma_rs_warpspecialized_mixed_input`, uint4 x bf16 with a bf16 scale and zero
// per group, wgmma with the weight converted in registers), compiled only where the build found
// CUTLASS's headers (AO_WITH_CUTLASS, scripts/setup-deps.sh) and run only on sm_90.
//   y [m, n] (bf16, row stride n) = x [m, k] (bf16, row stride k) . W^T,
//   W[r][c] = bf16(bf16(u * s) + z), u the nibble (0..15), s and z the bf16 scale and
//   zero - 8 s of (row r, group c / g), as [k_padded / g][ld] planes (rows fastest).
// docs/CUDA.md lab note 96.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ao::cuda {

struct Int4MixedGemmArgs {
  const void* w = nullptr;  // [n, k_padded / 2] bytes, element c in nibble c % 8 (low first)
  const uint16_t* s = nullptr;
  const uint16_t* z = nullptr;
  int64_t ld_sz = 0;        // row stride of the s / z planes (>= n, a multiple of 8)
  int64_t n = 0, k = 0, k_padded = 0;
  int group_size = 0;
  const uint16_t* x = nullptr;
  int m = 0;
  uint16_t* y = nullptr;
};

// True when this build has the kernel and the current device runs it (compute capability 9.0).
bool int4_mixed_gemm_available();
// True when the kernel takes a weight of this shape: group size a multiple of 64 (the tile's K),
// k a multiple of 64, n a multiple of 8, k_padded a multiple of 32. Host only; no device call.
bool int4_mixed_gemm_fits(int64_t n, int64_t k, int64_t k_padded, int group_size);
// Enqueues the GEMM on `s`; fails (ao::Error) when the kernel refuses the arguments.
void int4_mixed_gemm(const Int4MixedGemmArgs& a, cudaStream_t s);

}  // namespace ao::cuda

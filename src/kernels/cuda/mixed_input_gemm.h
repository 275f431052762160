// Prefill GEMMs of quantized weights without a bf16 copy: CUTLASS's sm90 mixed-input GEMM
// (`sm90_mma_tma_gmma_rs_warpspecialized_mixed_input`: wgmma with the narrow weight converted to
// bf16 in registers), compiled only where the build found CUTLASS's headers (AO_WITH_CUTLASS,
// scripts/setup-deps.sh) and run only on sm_90.
//   y [m, n] (bf16, row stride n) = x [m, k] (bf16, row stride k) . W^T, with W[r][c] =
//   - uint4_zero: bf16(u s + z), u the nibble (0..15) of element c (nibble c % 8 of its 32-bit
//     word, low first; rows of k_padded / 2 bytes), s and z the bf16 scale and zero - 8 s of
//     (row r, group c / g), as [k_padded / g][ld] planes (rows fastest) (lab note 96);
//   - int8_scale / e4m3_scale: bf16(q s), q the int8 / e4m3 byte (rows of k_padded bytes), s the
//     row's bf16 scale, a [1][ld] plane; z unused (lab note 98).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ao::cuda {

enum class MixedInput : int { uint4_zero = 0, int8_scale = 1, e4m3_scale = 2 };

struct MixedInputGemmArgs {
  MixedInput kind = MixedInput::uint4_zero;
  const void* w = nullptr;
  const uint16_t* s = nullptr;
  const uint16_t* z = nullptr;  // uint4_zero only
  int64_t ld_sz = 0;            // row stride of the s / z planes (>= n, a multiple of 8)
  int64_t n = 0, k = 0, k_padded = 0;
  int group_size = 0;  // uint4_zero only (the others: one scale per row)
  const uint16_t* x = nullptr;
  int m = 0;
  uint16_t* y = nullptr;
};

// True when this build has the kernels and the current device runs them (compute capability 9.0).
bool mixed_input_gemm_available();
// True when the kernel takes a weight of this shape: n a multiple of 8; uint4_zero: group a
// multiple of 64 (the tile's K), k a multiple of 64, k_padded of 32; int8 / e4m3: k and k_padded
// multiples of 16. Host only; no device call.
bool mixed_input_gemm_fits(MixedInput kind, int64_t n, int64_t k, int64_t k_padded,
                           int group_size);
// Enqueues the GEMM on `s`; fails (ao::Error) when the kernel refuses the arguments.
void mixed_input_gemm(const MixedInputGemmArgs& a, cudaStream_t s);

}  // namespace ao::cuda

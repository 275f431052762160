// Helpers shared by the CUDA kernels: bf16 bit conversions, warp/block reductions, hashing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <utility>

#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda::detail {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}
__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  __nv_bfloat16 h = __float2bfloat16_rn(f);
  return *reinterpret_cast<uint16_t*>(&h);
}
__device__ __forceinline__ float round_bf16(float f) {
  return bf16_bits_to_float(float_to_bf16_bits(f));
}

// An int4 scale word (int4_pack_scale: bf16 s low, bf16 zero high) as {s, zero} in fp32, and as
// {s, zero - 8 s}, the pair most int4 kernels' math takes (deq = q s + (zero - 8 s); one
// rounding, as the host's zero - 8.f * s).
__device__ __forceinline__ float2 int4_scale_zero(uint32_t p) {
  return make_float2(__uint_as_float(p << 16), __uint_as_float(p & 0xffff0000u));
}
__device__ __forceinline__ float2 int4_scale_bias(uint32_t p) {
  const float2 sz = int4_scale_zero(p);
  return make_float2(sz.x, fmaf(-8.f, sz.x, sz.y));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; `red` holds 32 floats of shared memory. All threads get the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? red[lane] : 0.f;
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? red[lane] : -INFINITY;
  return warp_max(t);
}

// splitmix64: a counter-based hash; uniform in [0, 1) from the top 24 bits.
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ float uniform01(uint64_t seed, uint64_t i) {
  return static_cast<float>(mix64(seed ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);
}

// ---- x of the int4 batch-1 GEMV as integer digits (gemv_tma.cuh, docs/CUDA.md lab note 70) ----
// x is staged as X = rn(x S), S a power of two, |X| < 2^22, in three signed base-256 digits
// X = 65536 d2 + 256 d1 + d0 (each in [-128, 127]), one per column of the integer mma. The layout
// per 128-k segment is [half wd / 2][digit n][lane t] of 16 bytes (words wd % 2 = 0, 1), so that
// a consumer's two 16-byte loads read 12 distinct pieces each; imma_digit_index gives the 8-byte
// piece (uint2) of digit n of the 8 values x[j .. j + 7] (j a multiple of 8).
__device__ __forceinline__ int imma_digit_index(int j, int n) {
  const int gi = j >> 7, tt = (j >> 5) & 3, wd = (j >> 3) & 3;
  return ((gi * 2 + (wd >> 1)) * 12 + n * 4 + tt) * 2 + (wd & 1);
}
// The power-of-two scale S = s1 s2 that puts a max |x| in [2^21, 2^22) for the digits, as two
// floats (s1 <= 2^126; s2 > 1 only below 2^-104: up to 2^45). 1 for a zero or non-finite max.
__device__ __forceinline__ float2 imma_row_scale(float mx) {
  int e = 0;
  frexpf(mx, &e);  // mx in [2^(e-1), 2^e)
  if (!(mx > 0.f && mx < INFINITY)) return make_float2(1.f, 1.f);
  const int k = 22 - e, k1 = min(k, 126);
  return make_float2(ldexpf(1.f, k1), ldexpf(1.f, k - k1));
}
// X = rn(v[e] s s2) of 8 consecutive values as the bytes z[e] = the digits d0, d1, d2 of X as int8
// (bytes 0-2); returns the sum of the 8 X. X is the bits of the FFMA v s s2 + 1.5 * 2^23 minus
// those of 1.5 * 2^23: near 1.5 * 2^23 the floats are the integers, so the FFMA's rounding to
// nearest even is rn's. The bytes of X + 0x808080 are d0 + 128, d1 + 128, d2 + 128, so those
// bytes XOR 0x80 are the digits (docs/CUDA.md lab note 76).
__device__ __forceinline__ int imma_digit_bytes8(const float* v, float s, float s2,
                                                 uint32_t (&z)[8]) {
  constexpr uint32_t kMagic = 0x4B400000u;  // the bits of 1.5 * 2^23
  uint32_t bsum = 0;                        // the 8 X's sum plus 8 kMagic, modulo 2^32
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const uint32_t b = __float_as_uint(fmaf(v[e] * s, s2, 12582912.f));
    bsum += b;
    z[e] = (b + (0x808080u - kMagic)) ^ 0x808080u;
  }
  return static_cast<int>(bsum - 8u * kMagic);
}
// imma_digit_bytes8's bytes gathered by PRMTs: dg[n][hw] holds digit 2 - n of the elements hw,
// hw + 2, hw + 4, hw + 6 (bytes 0-3), the two words of imma_digit_index(j, n).
__device__ __forceinline__ void imma_pack_digits(const uint32_t (&z)[8], uint32_t (&dg)[3][2]) {
#pragma unroll
  for (int hw = 0; hw < 2; ++hw) {
    // [e0.b0, e2.b0, e0.b1, e2.b1], [e4.b0, ...] and [e0.b2, e2.b2, ...], [e4.b2, ...]
    const uint32_t lo01 = __byte_perm(z[hw], z[2 + hw], 0x5140);
    const uint32_t lo23 = __byte_perm(z[4 + hw], z[6 + hw], 0x5140);
    const uint32_t hi01 = __byte_perm(z[hw], z[2 + hw], 0x0062);
    const uint32_t hi23 = __byte_perm(z[4 + hw], z[6 + hw], 0x0062);
    dg[2][hw] = __byte_perm(lo01, lo23, 0x5410);  // d0
    dg[1][hw] = __byte_perm(lo01, lo23, 0x7632);  // d1
    dg[0][hw] = __byte_perm(hi01, hi23, 0x5410);  // d2
  }
}

// Programmatic dependent launch (sm_90): wait for the preceding kernel's results / let the next
// kernel start launching. No-ops on older architectures and without the launch attribute.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// Host side: GEMV launches carry the programmatic-dependent-launch attribute unless
// AO_CUDA_PDL=0 (for diagnosing ordering problems).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("AO_CUDA_PDL");
    return !(e && e[0] == '0');
  }();
  return on;
}

// Launches kernel<<<grid, block, smem, s>>>(args...) with the programmatic-dependent-launch
// attribute (unless AO_CUDA_PDL=0): the kernel may start while the previous one finishes, and
// must call grid_dependency_wait() before reading what that one wrote.
template <typename... KernelArgs, typename... Args>
void launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  AO_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// Lets `kernel` use up to `smem_bytes` of dynamic shared memory; returns the device's SM count.
template <typename Kernel>
int opt_in_shared_memory(Kernel kernel, int smem_bytes) {
  AO_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  int dev = 0, sms = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace ao::cuda::detail

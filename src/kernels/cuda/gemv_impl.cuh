// Weight-streaming GEMV for batch 1-8: y = x W^T with W in bf16, int8 (per-row scale), int4
// (group-wise scale + zero) or fp8 e4m3 (per-row/tensor scale). Each warp owns R rows and walks
// the whole K with 16-byte loads (8 bf16 / 16 int8 / 32 int4 / 16 fp8 per lane); the block
// stages x (after an optional fused RMSNorm or SwiGLU) in shared memory as fp32, laid out so
// that a warp's reads of its 32 lanes' chunks are consecutive (no bank conflicts).
//
// int4 dequantization without int->float conversions: for a nibble q, the float with bits
// 0x3F800000 | q << p is 1 + q 2^(p-23). Even k use p = 12, odd k p = 16 (each reachable from
// a 32-bit word of 8 nibbles with 4 shifts and one LOP3 per element); x is stored pre-scaled by
// 2^11 (even k) or 2^7 (odd k), so sum x' (1 + q 2^-p) = sum x' + sum x q, and the per-chunk
// sum x' comes from the prologue. One FFMA per weight, ~1.5 integer ops.
#pragma once

#include <cuda_fp8.h>

#include <algorithm>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"

namespace ao::cuda {

using namespace detail;

// Per-format entry, instantiated in gemv_<format>.cu (one file each: they compile in parallel).
template <WeightFormat F>
void gemv_format(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);

namespace {

template <WeightFormat F>
struct Fmt;
template <>
struct Fmt<WeightFormat::bf16> {
  static constexpr int E = 8;  // elements per 16-byte chunk
};
template <>
struct Fmt<WeightFormat::int8> {
  static constexpr int E = 16;
};
template <>
struct Fmt<WeightFormat::fp8> {
  static constexpr int E = 16;
};
template <>
struct Fmt<WeightFormat::int4> {
  static constexpr int E = 32;
};

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The 4 weights of chunk float4 `v` (elements 4v..4v+3), as floats ready for the FMA with x.
template <WeightFormat F>
__device__ __forceinline__ float4 weights4(const uint4& w, int v);

template <>
__device__ __forceinline__ float4 weights4<WeightFormat::bf16>(const uint4& w, int v) {
  const uint32_t a = word(w, 2 * v), b = word(w, 2 * v + 1);
  return make_float4(__uint_as_float(a << 16), __uint_as_float(a & 0xffff0000u),
                     __uint_as_float(b << 16), __uint_as_float(b & 0xffff0000u));
}
template <>
__device__ __forceinline__ float4 weights4<WeightFormat::int8>(const uint4& w, int v) {
  const uint32_t a = word(w, v) ^ 0x80808080u;  // signed -> unsigned + 128
  constexpr float kOff = 8388608.f + 128.f;
  return make_float4(__uint_as_float(__byte_perm(a, 0x4b000000u, 0x7540)) - kOff,
                     __uint_as_float(__byte_perm(a, 0x4b000000u, 0x7541)) - kOff,
                     __uint_as_float(__byte_perm(a, 0x4b000000u, 0x7542)) - kOff,
                     __uint_as_float(__byte_perm(a, 0x4b000000u, 0x7543)) - kOff);
}
template <>
__device__ __forceinline__ float4 weights4<WeightFormat::fp8>(const uint4& w, int v) {
  const uint32_t a = word(w, v);
  __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(a & 0xffffu),
                                              __NV_E4M3);
  __half2_raw hi =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(a >> 16), __NV_E4M3);
  float2 l = __half22float2(*reinterpret_cast<__half2*>(&lo));
  float2 h = __half22float2(*reinterpret_cast<__half2*>(&hi));
  return make_float4(l.x, l.y, h.x, h.y);
}
template <>
__device__ __forceinline__ float4 weights4<WeightFormat::int4>(const uint4& w, int v) {
  // float4 v holds elements 4v..4v+3 = nibbles (4v % 8) .. +3 of word v / 2.
  const uint32_t a = word(w, v >> 1);
  uint32_t s0, s1;
  if ((v & 1) == 0) {
    s0 = a << 12;  // nibble 0 -> bits 12..15, nibble 1 -> 16..19
    s1 = a << 4;   // nibble 2 -> 12..15, nibble 3 -> 16..19
  } else {
    s0 = a >> 4;   // nibble 4 -> 12..15, nibble 5 -> 16..19
    s1 = a >> 12;  // nibble 6, 7
  }
  return make_float4(__uint_as_float((s0 & 0x0000f000u) | 0x3f800000u),
                     __uint_as_float((s0 & 0x000f0000u) | 0x3f800000u),
                     __uint_as_float((s1 & 0x0000f000u) | 0x3f800000u),
                     __uint_as_float((s1 & 0x000f0000u) | 0x3f800000u));
}

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// Shared-memory float offset of element k of a segment (chunk c = k / E, lane = c % 32).
template <int E>
__device__ __forceinline__ int x_slot(int k) {
  constexpr int V = E / 4;
  const int c = k / E, j = k % E;
  return (((c >> 5) * V + (j >> 2)) * 32 + (c & 31)) * 4 + (j & 3);
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int R, int U>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const DeviceWeight w, const GemvArgs a,
                                                        int seg) {
  constexpr int E = Fmt<F>::E;
  constexpr int V = E / 4;
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);                 // [M][seg]
  float2* csum = reinterpret_cast<float2*>(xs + M * seg);      // int4: [M][seg / 32]
  __shared__ float red[32];
  __shared__ float inv_rms[M];

  const int K = static_cast<int>(w.k), Kp = static_cast<int>(w.k_padded);
  const int N = static_cast<int>(w.n);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int row0 = (blockIdx.x * kWarps + warp) * R;
  const int64_t xstride = a.x_stride ? a.x_stride : (IN == GemvInput::swiglu ? 2 * K : K);

  if constexpr (IN == GemvInput::rmsnorm) {
    const float* x = static_cast<const float*>(a.x);
    for (int m = 0; m < M; ++m) {
      float ss = 0.f;
      for (int k = threadIdx.x; k < K; k += kThreads) {
        const float v = x[m * xstride + k];
        ss += v * v;
      }
      ss = block_sum(ss, red);
      if (threadIdx.x == 0) inv_rms[m] = rsqrtf(ss / K + a.eps);
    }
    __syncthreads();
  }

  // Row pointers (rows past N re-read row N - 1 and are not stored).
  const uint8_t* wrow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int row = min(row0 + r, N - 1);
    wrow[r] = static_cast<const uint8_t*>(w.data) + static_cast<int64_t>(row) * (Kp / E) * 16;
  }
  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

  for (int k0 = 0; k0 < Kp; k0 += seg) {
    const int slen = min(seg, Kp - k0);
    __syncthreads();
    // Prologue: x segment -> shared memory (fp32, rounded to bf16 like a bf16 activation).
    for (int m = 0; m < M; ++m) {
      for (int j = threadIdx.x; j < slen; j += kThreads) {
        const int k = k0 + j;
        float v = 0.f;
        if (k < K) {
          if constexpr (IN == GemvInput::bf16) {
            v = bf16_bits_to_float(static_cast<const uint16_t*>(a.x)[m * xstride + k]);
          } else if constexpr (IN == GemvInput::rmsnorm) {
            v = round_bf16(static_cast<const float*>(a.x)[m * xstride + k] * inv_rms[m]) *
                bf16_bits_to_float(a.rms_weight[k]);
            v = round_bf16(v);
          } else {
            const uint16_t* gu = static_cast<const uint16_t*>(a.x) + m * xstride;
            const float g = bf16_bits_to_float(gu[k]), u = bf16_bits_to_float(gu[K + k]);
            v = round_bf16(round_bf16(g / (1.f + __expf(-g))) * u);
          }
        }
        if constexpr (F == WeightFormat::int4) v *= (k & 1) ? 128.f : 2048.f;
        xs[m * seg + x_slot<E>(j)] = v;
      }
    }
    __syncthreads();
    if constexpr (F == WeightFormat::int4) {
      // Per 32-element chunk: {sum x' (scaled), sum x (unscaled)}.
      const int nchunk = slen / 32;
      for (int t = threadIdx.x; t < M * nchunk; t += kThreads) {
        const int m = t / nchunk, c = t % nchunk;
        float sp = 0.f, su = 0.f;
        for (int j = 0; j < 32; ++j) {
          const float v = xs[m * seg + x_slot<E>(c * 32 + j)];
          sp += v;
          su += v * ((j & 1) ? (1.f / 128.f) : (1.f / 2048.f));
        }
        csum[m * (seg / 32) + c] = make_float2(sp, su);
      }
      __syncthreads();
    }

    const int iters = slen / (32 * E);
    const int cbase = k0 / E;  // chunk index of the segment start
    for (int i0 = 0; i0 < iters; i0 += U) {
      uint4 wv[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (i0 + u < iters)
            wv[u][r] = load_stream(wrow[r] + static_cast<int64_t>(cbase + (i0 + u) * 32 + lane) * 16);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (i0 + u >= iters) break;
        const int i = i0 + u;
        if constexpr (F == WeightFormat::int4) {
          const int c = cbase + i * 32 + lane;  // global chunk
          const int g = c * 32 / w.group_size;
          float part[M][R];
#pragma unroll
          for (int m = 0; m < M; ++m)
#pragma unroll
            for (int r = 0; r < R; ++r) part[m][r] = 0.f;
#pragma unroll
          for (int v = 0; v < V; ++v) {
            float4 wf[R];
#pragma unroll
            for (int r = 0; r < R; ++r) wf[r] = weights4<F>(wv[u][r], v);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              const float4 x4 = smem4[(m * seg) / 4 + (i * V + v) * 32 + lane];
#pragma unroll
              for (int r = 0; r < R; ++r) {
                part[m][r] = fmaf(x4.x, wf[r].x, part[m][r]);
                part[m][r] = fmaf(x4.y, wf[r].y, part[m][r]);
                part[m][r] = fmaf(x4.z, wf[r].z, part[m][r]);
                part[m][r] = fmaf(x4.w, wf[r].w, part[m][r]);
              }
            }
          }
          const float2* sb = static_cast<const float2*>(w.scale);
          const int groups = Kp / w.group_size;
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const int row = min(row0 + r, N - 1);
            const float2 s = __ldg(&sb[static_cast<int64_t>(row) * groups + g]);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              const float2 cs = csum[m * (seg / 32) + i * 32 + lane];
              acc[m][r] += s.x * (part[m][r] - cs.x) + s.y * cs.y;
            }
          }
        } else {
#pragma unroll
          for (int v = 0; v < V; ++v) {
            float4 wf[R];
#pragma unroll
            for (int r = 0; r < R; ++r) wf[r] = weights4<F>(wv[u][r], v);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              const float4 x4 = smem4[(m * seg) / 4 + (i * V + v) * 32 + lane];
#pragma unroll
              for (int r = 0; r < R; ++r) {
                acc[m][r] = fmaf(x4.x, wf[r].x, acc[m][r]);
                acc[m][r] = fmaf(x4.y, wf[r].y, acc[m][r]);
                acc[m][r] = fmaf(x4.z, wf[r].z, acc[m][r]);
                acc[m][r] = fmaf(x4.w, wf[r].w, acc[m][r]);
              }
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = warp_sum(acc[m][r]);

  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = row0 + r;
      if (row >= N) continue;
      float sc = 1.f;
      if constexpr (F == WeightFormat::int8 || F == WeightFormat::fp8)
        sc = static_cast<const float*>(w.scale)[row];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float v = acc[m][r] * sc;
        if constexpr (OUT == GemvOutput::bf16)
          static_cast<uint16_t*>(a.y)[static_cast<int64_t>(m) * N + row] = float_to_bf16_bits(v);
        else if constexpr (OUT == GemvOutput::f32)
          static_cast<float*>(a.y)[static_cast<int64_t>(m) * N + row] = v;
        else
          static_cast<float*>(a.y)[static_cast<int64_t>(m) * N + row] += round_bf16(v);
      }
    }
  }
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT>
void launch(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  constexpr int R = (F == WeightFormat::bf16) ? 2 : (F == WeightFormat::int4 ? 4 : 2);
  constexpr int U = (F == WeightFormat::int4) ? 2 : 4;
  // Segment: whole K when it fits 64 KB of fp32 per batch row budget, else 16 KB per row.
  const int per_row = (F == WeightFormat::int4) ? 16384 : 16384;
  int seg = static_cast<int>(std::min<int64_t>(w.k_padded, per_row / M));
  const int align = gemv_k_align(F);
  seg = std::max(align, seg / align * align);
  const size_t smem = static_cast<size_t>(M) * seg * 4 +
                      (F == WeightFormat::int4 ? static_cast<size_t>(M) * (seg / 32) * 8 : 0);
  static bool configured = false;
  if (!configured) {
    AO_CUDA_CHECK(cudaFuncSetAttribute(gemv_kernel<F, M, IN, OUT, R, U>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024));
    configured = true;
  }
  const unsigned grid = static_cast<unsigned>((w.n + kWarps * R - 1) / (kWarps * R));
  gemv_kernel<F, M, IN, OUT, R, U><<<grid, kThreads, smem, s>>>(w, a, seg);
  AO_CUDA_CHECK(cudaGetLastError());
}

template <WeightFormat F, int M>
void dispatch_io(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  using I = GemvInput;
  using O = GemvOutput;
  if (a.input == I::rmsnorm && a.output == O::bf16) return launch<F, M, I::rmsnorm, O::bf16>(w, a, s);
  if (a.input == I::rmsnorm && a.output == O::f32) return launch<F, M, I::rmsnorm, O::f32>(w, a, s);
  if (a.input == I::bf16 && a.output == O::add_residual)
    return launch<F, M, I::bf16, O::add_residual>(w, a, s);
  if (a.input == I::swiglu && a.output == O::add_residual)
    return launch<F, M, I::swiglu, O::add_residual>(w, a, s);
  if (a.input == I::bf16 && a.output == O::f32) return launch<F, M, I::bf16, O::f32>(w, a, s);
  if (a.input == I::bf16 && a.output == O::bf16) return launch<F, M, I::bf16, O::bf16>(w, a, s);
  fail("gemv: unsupported input/output combination");
}

}  // namespace

template <WeightFormat F>
void gemv_format(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  switch (a.m) {
    case 1: return dispatch_io<F, 1>(w, a, s);
    case 2: return dispatch_io<F, 2>(w, a, s);
    case 4: return dispatch_io<F, 4>(w, a, s);
    case 8: return dispatch_io<F, 8>(w, a, s);
    default: break;
  }
  // 3, 5, 6, 7: the largest power of two first, then the rest.
  const int first = a.m > 4 ? 4 : 2;
  GemvArgs head = a;
  head.m = first;
  gemv_format<F>(w, head, s);
  GemvArgs rest = a;
  rest.m = a.m - first;
  const int64_t K = w.k;
  const int64_t xs = a.x_stride ? a.x_stride : (a.input == GemvInput::swiglu ? 2 * K : K);
  const size_t xel = a.input == GemvInput::rmsnorm ? 4 : 2;
  rest.x = static_cast<const uint8_t*>(a.x) + first * xs * xel;
  rest.x_stride = xs;
  const size_t yel = a.output == GemvOutput::bf16 ? 2 : 4;
  rest.y = static_cast<uint8_t*>(a.y) + first * w.n * yel;
  gemv_format<F>(w, rest, s);
}
}  // namespace ao::cuda

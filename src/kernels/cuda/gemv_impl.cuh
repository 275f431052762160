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
//
// fp8 with dynamic activation quantization (AQ != none, a template flag: the other formats'
// kernels are unchanged): a pre-pass over all of K computes each row's amax of the staged x
// (after the RMSNorm prologue), the staging writes the e4m3 values of x / scale instead of x,
// and the epilogue multiplies by the activation scale before the weight scale. Products of two
// e4m3 values are exact in fp32, so this is torch._scaled_mm up to the fp32 summation order.
#pragma once

#include <cuda_fp8.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"
#include "fp8_activation.cuh"
#include "trace.cuh"

namespace ao::cuda {

using namespace detail;

// Per-format entry, instantiated in gemv_<format>.cu (one file each: they compile in parallel).
template <WeightFormat F>
void gemv_format(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);
// Keeps what a launcher chose for last_gemv_launch() (gemv.cu).
void record_gemv_launch(const GemvLaunch& l);

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
// int8: u = q + 128 (flip the sign bit) placed by one PRMT into the mantissa of 1.0:
// w' = 1 + u 2^-15, exact. With x staged as x' = 2^15 x, sum x' w' = sum x' + sum x u, so per
// 16-element chunk sum x q = sum x' w' - (1 + 2^-8) sum x' (the chunk sums of x' come from the
// prologue). Two instructions per weight (PRMT, FFMA) instead of three (PRMT, FADD, FFMA).
template <>
__device__ __forceinline__ float4 weights4<WeightFormat::int8>(const uint4& w, int v) {
  const uint32_t a = word(w, v) ^ 0x80808080u;  // signed -> unsigned + 128
  return make_float4(__uint_as_float(__byte_perm(a, 0x3f800000u, 0x7604)),
                     __uint_as_float(__byte_perm(a, 0x3f800000u, 0x7614)),
                     __uint_as_float(__byte_perm(a, 0x3f800000u, 0x7624)),
                     __uint_as_float(__byte_perm(a, 0x3f800000u, 0x7634)));
}
template <>
__device__ __forceinline__ float4 weights4<WeightFormat::fp8>(const uint4& w, int v) {
  const uint32_t a = word(w, v);
  __half2_raw lo =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(a & 0xffffu), __NV_E4M3);
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

// x[m][k .. k + 3] after the fused input op, as floats holding bf16 values (0 past K). Shared by
// the prologues of the CUDA-core and the tensor-core kernels.
template <GemvInput IN>
__device__ __forceinline__ void gemv_x4(const GemvArgs& a, int m, int k, int K, int64_t xstride,
                                        bool vec, float inv_rms, float* v) {
  v[0] = v[1] = v[2] = v[3] = 0.f;
  if (vec && k + 3 < K) {
    if constexpr (IN == GemvInput::bf16) {
      const uint2 b =
          *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(a.x) + m * xstride + k);
      v[0] = __uint_as_float(b.x << 16), v[1] = __uint_as_float(b.x & 0xffff0000u);
      v[2] = __uint_as_float(b.y << 16), v[3] = __uint_as_float(b.y & 0xffff0000u);
    } else {
      const float4 xv =
          *reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + m * xstride + k);
      const uint2 b = *reinterpret_cast<const uint2*>(a.rms_weight + k);
      v[0] = round_bf16(round_bf16(xv.x * inv_rms) * __uint_as_float(b.x << 16));
      v[1] = round_bf16(round_bf16(xv.y * inv_rms) * __uint_as_float(b.x & 0xffff0000u));
      v[2] = round_bf16(round_bf16(xv.z * inv_rms) * __uint_as_float(b.y << 16));
      v[3] = round_bf16(round_bf16(xv.w * inv_rms) * __uint_as_float(b.y & 0xffff0000u));
    }
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (k + e >= K) break;
      if constexpr (IN == GemvInput::bf16) {
        v[e] = bf16_bits_to_float(static_cast<const uint16_t*>(a.x)[m * xstride + k + e]);
      } else {
        v[e] =
            round_bf16(round_bf16(static_cast<const float*>(a.x)[m * xstride + k + e] * inv_rms) *
                       bf16_bits_to_float(a.rms_weight[k + e]));
      }
    }
  }
}

// This thread's share of the fused RMSNorm's weight for gemv_rmsnorm_onepass (V consecutive k
// every nthreads * V, kRegIt times). The weight never changes, so a kernel loads it before its
// grid-dependency wait, with its first weight loads: it is read once per layer per token, long
// evicted from L2 by then, and a DRAM read under the weight stream took microseconds on the
// prologue's critical path when it was loaded beside x (docs/CUDA.md lab note 33).
// `GemvNormFlags::late` (lab AO_NORM_PREFETCH=0) loads it after the wait instead, as before.
template <int V, int kRegIt>
struct GemvNormWeights {
  static_assert(V == 4 || V == 8, "4 or 8 consecutive k per thread");
  uint2 w[kRegIt][V / 4];
  // Only where gemv_rmsnorm_onepass can apply (its own test repeats it): every load in bounds.
  __device__ __forceinline__ void load(const GemvArgs& a, int K, int Kp, int tid, int nthreads) {
    if (K != Kp || K % 4 != 0 || Kp > nthreads * V * kRegIt) return;
#pragma unroll
    for (int i = 0; i < kRegIt; ++i) {
      const int j = tid * V + i * nthreads * V;
      if (j < Kp)
#pragma unroll
        for (int h = 0; h < V / 4; ++h)
          w[i][h] = *reinterpret_cast<const uint2*>(a.rms_weight + j + 4 * h);
    }
  }
};
// The lab's switches of the fused RMSNorm prologue, one int in every GEMV kernel's arguments.
struct GemvNormFlags {
  enum : int {
    two_pass = 1,  // gemv_inv_rms then the staging (lab AO_GEMV_RMS2=1)
    late = 2,      // the norm weight loaded after the wait (lab AO_NORM_PREFETCH=0)
  };
};

// The fused RMSNorm prologue in one pass, where a thread's share of each row (V = 4 or 8
// consecutive k every nthreads * V) fits kRegIt x V floats: the thread loads its x (the norm
// weights `nw` are loaded before the wait, GemvNormWeights; with `late_nw` here, beside x),
// `reduce(m, ss)` sums the squares over the block (a barrier; every thread gets the total), then
// `stage(m, j, v)` gets x[m][j .. j + V - 1] normalized exactly as gemv_x4 rounds it. One round
// of loads instead of the two of gemv_inv_rms + gemv_x4 (the second behind a block barrier).
// Measured on the H200 (run 42, llama3-8b tg128, same call): bf16 252.4 -> 258.1 tok/s, int4
// 496.1 -> 516.5. `issued()` runs once the first row's loads are issued (the TMA kernel's
// producer holds back part of its ring until then), and `before_stage(m, mx)` once row m is
// normalized, before its staging, with this thread's max |x| of the row (the TMA kernel's fp16
// staging takes its scale from it). Returns false, doing nothing, where it does not apply (K
// padded or unaligned, or the row too long for the registers).
struct NoStageHook {
  __device__ void operator()(int, float) const {}
};
template <int M, int V, int kRegIt, class Reduce, class Stage, class Issued,
          class Before = NoStageHook>
__device__ __forceinline__ bool gemv_rmsnorm_onepass(const GemvArgs& a, int K, int Kp,
                                                     int64_t xstride, bool vec, int tid,
                                                     int nthreads, GemvNormWeights<V, kRegIt>& nw,
                                                     bool late_nw, Reduce&& reduce, Stage&& stage,
                                                     Issued&& issued,
                                                     Before&& before_stage = NoStageHook{}) {
  constexpr int H = V / 4;
  if (!vec || K != Kp || Kp > nthreads * V * kRegIt) return false;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float4 xr[kRegIt][H];
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < kRegIt; ++i) {
      const int j = tid * V + i * nthreads * V;
      if (j < Kp) {
        const float4* xp =
            reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + m * xstride + j);
#pragma unroll
        for (int h = 0; h < H; ++h) xr[i][h] = xp[h];
      }
    }
    if (m == 0 && late_nw) nw.load(a, K, Kp, tid, nthreads);
    if (m == 0) issued();
#pragma unroll
    for (int i = 0; i < kRegIt; ++i)
      if (tid * V + i * nthreads * V < Kp)
#pragma unroll
        for (int h = 0; h < H; ++h)
          ss += xr[i][h].x * xr[i][h].x + xr[i][h].y * xr[i][h].y + xr[i][h].z * xr[i][h].z +
                xr[i][h].w * xr[i][h].w;
    const float iv = rsqrtf(reduce(m, ss) / K + a.eps);
    auto normalize = [&](int i, float* v) {
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const float4 xv = xr[i][h];
        const uint2 b = nw.w[i][h];
        v[4 * h + 0] = round_bf16(round_bf16(xv.x * iv) * __uint_as_float(b.x << 16));
        v[4 * h + 1] = round_bf16(round_bf16(xv.y * iv) * __uint_as_float(b.x & 0xffff0000u));
        v[4 * h + 2] = round_bf16(round_bf16(xv.z * iv) * __uint_as_float(b.y << 16));
        v[4 * h + 3] = round_bf16(round_bf16(xv.w * iv) * __uint_as_float(b.y & 0xffff0000u));
      }
    };
    if constexpr (std::is_same_v<std::decay_t<Before>, NoStageHook>) {
      // Normalize and stage 8 k at a time (the code every caller ran until session 8).
#pragma unroll
      for (int i = 0; i < kRegIt; ++i) {
        const int j = tid * V + i * nthreads * V;
        if (j < Kp) {
          float v[V];
          normalize(i, v);
          stage(m, j, v);
        }
      }
    } else {
      float v[kRegIt][V];
      float mx = 0.f;
#pragma unroll
      for (int i = 0; i < kRegIt; ++i) {
        if (tid * V + i * nthreads * V < Kp) {
          normalize(i, v[i]);
#pragma unroll
          for (int e = 0; e < V; ++e) mx = fmaxf(mx, fabsf(v[i][e]));
        }
      }
      before_stage(m, mx);
#pragma unroll
      for (int i = 0; i < kRegIt; ++i) {
        const int j = tid * V + i * nthreads * V;
        if (j < Kp) stage(m, j, v[i]);
      }
    }
  }
  return true;
}

// The bf16 input staged from one round of loads: each thread loads its share of row m (8
// consecutive k every nthreads * 8, up to kRegIt x 8) into registers, `issued()` runs once row 0's
// loads are issued, `before_stage(m, mx)` with this thread's max |x| of row m, then
// `stage(m, j, v)` gets x[m][j .. j + 7]. Returns false, doing nothing, where it does not apply
// (K padded, rows not 16-byte aligned, or too long for the registers).
template <int M, int kRegIt, class Stage, class Issued, class Before = NoStageHook>
__device__ __forceinline__ bool gemv_bf16_onepass(const GemvArgs& a, int K, int Kp, int64_t xstride,
                                                  int tid, int nthreads, Stage&& stage,
                                                  Issued&& issued,
                                                  Before&& before_stage = NoStageHook{}) {
  auto unpack = [](const uint4& r, float* v) {
    const uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      v[2 * e] = __uint_as_float(u[e] << 16);
      v[2 * e + 1] = __uint_as_float(u[e] & 0xffff0000u);
    }
  };
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  if (K != Kp || K % 8 != 0 || xstride % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      Kp > nthreads * 8 * kRegIt)
    return false;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    uint4 xr[kRegIt];
#pragma unroll
    for (int i = 0; i < kRegIt; ++i) {
      const int j = (tid + i * nthreads) * 8;
      if (j < Kp) xr[i] = *reinterpret_cast<const uint4*>(x + m * xstride + j);
    }
    if (m == 0) issued();
    if constexpr (!std::is_same_v<std::decay_t<Before>, NoStageHook>) {
      float mx = 0.f;
#pragma unroll
      for (int i = 0; i < kRegIt; ++i) {
        if ((tid + i * nthreads) * 8 < Kp) {
          float v[8];
          unpack(xr[i], v);
#pragma unroll
          for (int e = 0; e < 8; ++e) mx = fmaxf(mx, fabsf(v[e]));
        }
      }
      before_stage(m, mx);
    }
#pragma unroll
    for (int i = 0; i < kRegIt; ++i) {
      const int j = (tid + i * nthreads) * 8;
      if (j < Kp) {
        float v[8];
        unpack(xr[i], v);
        stage(m, j, v);
      }
    }
  }
  return true;
}

// The fused RMSNorm's 1 / rms of each of the M rows of the f32 residual x into inv_rms[m] (all
// threads of the block; `red` holds 32 floats of shared memory). Shared by both GEMV kernels.
template <int M>
__device__ __forceinline__ void gemv_inv_rms(const GemvArgs& a, int K, int64_t xstride, bool vec,
                                             float* red, float* inv_rms) {
  const float* x = static_cast<const float*>(a.x);
  for (int m = 0; m < M; ++m) {
    float ss = 0.f;
    if (vec) {
      const float4* x4 = reinterpret_cast<const float4*>(x + m * xstride);
#pragma unroll 8
      for (int k = threadIdx.x; k < K / 4; k += blockDim.x) {
        const float4 v = x4[k];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    } else {
      for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = x[m * xstride + k];
        ss += v * v;
      }
    }
    ss = block_sum(ss, red);
    if (threadIdx.x == 0) inv_rms[m] = rsqrtf(ss / K + a.eps);
  }
  __syncthreads();
}

// Epilogue of row `row` (acc0[m], scale applied) and, for the paired outputs (rope_kv, swiglu),
// row + 1 (acc1[m]). Shared by the CUDA-core and the tensor-core kernels.
template <int M, GemvOutput OUT>
__device__ __forceinline__ void gemv_epilogue(const GemvArgs& a, int N, int row, const float* acc0,
                                              const float* acc1) {
  if constexpr (OUT == GemvOutput::rope_kv) {
    const RopeArgs& ro = a.rope;
    const int hd = ro.head_dim, h = row / hd, i = (row % hd) / 2;
    const int d0 = ro.interleaved ? 2 * i : i, d1 = ro.interleaved ? 2 * i + 1 : i + hd / 2;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float x0 = round_bf16(acc0[m]), x1 = round_bf16(acc1[m]);
      if (ro.bias) {
        x0 = round_bf16(x0 + bf16_bits_to_float(ro.bias[h * hd + d0]));
        x1 = round_bf16(x1 + bf16_bits_to_float(ro.bias[h * hd + d1]));
      }
      const int p = *a.pos + m;
      if (h < ro.n_heads + ro.n_kv_heads) {
        float sn, cs;
        sincosf(static_cast<float>(p) * ro.inv_freq[i], &sn, &cs);
        const float y0 = x0 * cs - x1 * sn, y1 = x1 * cs + x0 * sn;
        x0 = y0, x1 = y1;
      }
      uint16_t* dst;
      if (h < ro.n_heads)
        dst = a.q_out + (static_cast<int64_t>(m) * ro.n_heads + h) * hd;
      else if (h < ro.n_heads + ro.n_kv_heads)
        dst = a.k_cache + (static_cast<int64_t>(h - ro.n_heads) * ro.max_seq + p) * hd;
      else
        dst = a.v_cache +
              (static_cast<int64_t>(h - ro.n_heads - ro.n_kv_heads) * ro.max_seq + p) * hd;
      dst[d0] = float_to_bf16_bits(x0);
      dst[d1] = float_to_bf16_bits(x1);
    }
  } else if constexpr (OUT == GemvOutput::swiglu) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float g = round_bf16(acc0[m]), u = round_bf16(acc1[m]);
      static_cast<uint16_t*>(a.y)[static_cast<int64_t>(m) * (N / 2) + row / 2] =
          float_to_bf16_bits(round_bf16(g / (1.f + __expf(-g))) * u);
    }
  } else {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = acc0[m];
      if constexpr (OUT == GemvOutput::bf16)
        static_cast<uint16_t*>(a.y)[static_cast<int64_t>(m) * N + row] = float_to_bf16_bits(v);
      else if constexpr (OUT == GemvOutput::f32)
        static_cast<float*>(a.y)[static_cast<int64_t>(m) * N + row] = v;
      else
        static_cast<float*>(a.y)[static_cast<int64_t>(m) * N + row] += round_bf16(v);
    }
  }
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

// A block owns tiles of (kWarps / ks) * R rows: warp w takes rows (tile * kWarps / ks + w / ks)
// * R .. + R - 1 and the K slice w % ks of them (ks = `ksplit` warps per row group; their partial
// sums meet in shared memory, one barrier per tile). When x fits shared memory in one segment
// the grid is persistent (one prologue per block, tiles strided by gridDim.x); otherwise each
// block takes one tile and walks K in segments (ks = 1).
// Weights are loaded U iterations ahead (double-buffered); the first batch is issued before the
// grid-dependency wait and the prologue, so weight streaming overlaps the previous kernel's tail.
template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int R, int U, int W = kWarps,
          ActQuant AQ = ActQuant::none>
__global__ void __launch_bounds__(W * 32, 512 / (W * 32))
    gemv_kernel(const DeviceWeight w, const GemvArgs a, int seg, int ksplit, int early_dependents,
                int norm_flags) {
  static_assert(AQ == ActQuant::none || F == WeightFormat::fp8,
                "activation quantization is for fp8 weights");
  constexpr int kWarps = W;  // shadows the default: warps of this instantiation
  constexpr int kThreads = W * 32;
  constexpr int E = Fmt<F>::E;
  constexpr int V = E / 4;
  constexpr bool kInt4 = F == WeightFormat::int4;
  constexpr bool kInt8 = F == WeightFormat::int8;
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);             // [M][seg]
  float2* csum = reinterpret_cast<float2*>(xs + M * seg);  // int4: [M][seg / 32]
  float* csum8 = xs + M * seg;                             // int8: [M][seg / 16]
  __shared__ float red[32];
  __shared__ float inv_rms[M];
  __shared__ float act_scale[M];             // AQ only
  __shared__ float kred[2][kWarps * M * R];  // ksplit > 1: partial sums, double-buffered

  const int K = static_cast<int>(w.k), Kp = static_cast<int>(w.k_padded);
  const int N = static_cast<int>(w.n);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t xstride = a.x_stride ? a.x_stride : K;
  const bool single = seg >= Kp;
  const int ks = single ? ksplit : 1;        // the launcher checks divisibility
  const int wpt = kWarps / ks;               // row groups per tile
  const int wr = warp / ks, wk = warp % ks;  // this warp's row group and K slice
  const int ntiles = (N + wpt * R - 1) / (wpt * R);
  const int groups = kInt4 ? Kp / w.group_size : 1;
  const uint32_t* sbase = static_cast<const uint32_t*>(w.scale);  // int4 scale words
  const int64_t row_bytes = static_cast<int64_t>(Kp / E) * 16;

  // This warp's rows of tile t.
  auto set_rows = [&](int(&rs)[R], int t) {
#pragma unroll
    for (int r = 0; r < R; ++r) rs[r] = min((t * wpt + wr) * R + r, N - 1);
  };
  // Loads iteration i (global chunk cbase + i * 32 + lane) of rows rs.
  auto load = [&](uint4(&dst)[R], uint32_t(&sdst)[R], const int(&rs)[R], int cbase, int i) {
    const int c = cbase + i * 32 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      dst[r] = load_stream(static_cast<const uint8_t*>(w.data) + rs[r] * row_bytes +
                           static_cast<int64_t>(c) * 16);
      if constexpr (kInt4)
        sdst[r] = __ldg(&sbase[int4_scale_index(rs[r], c * 32 / w.group_size, groups)]);
    }
  };

  trace_point(TraceKind::gemv, w.data, N, K, TracePoint::start);
  if (early_dependents) grid_dependents_launch();  // else in the last tile, below
  uint4 wv[U][R];
  uint32_t sv[U][R];
  int tile = blockIdx.x;
  int rows[R];
  set_rows(rows, tile);
  {
    const int slice0 = min(seg, Kp) / (32 * E) / ks, ibeg0 = wk * slice0;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (u < slice0) load(wv[u], sv[u], rows, 0, ibeg0 + u);
  }
  bool prefetched = true;
  // The one-pass RMSNorm's weights, before the wait (GemvNormWeights).
  GemvNormWeights<4, 2> nw;
  const bool norm_onepass = IN == GemvInput::rmsnorm && AQ == ActQuant::none && single &&
                            !(norm_flags & GemvNormFlags::two_pass);
  const bool late_nw = norm_flags & GemvNormFlags::late;
  if (norm_onepass && !late_nw) nw.load(a, K, Kp, threadIdx.x, kThreads);
  grid_dependency_wait();
  trace_point(TraceKind::gemv, w.data, N, K, TracePoint::wait_done);

  const bool vec = (K % 4 == 0) && (xstride % 4 == 0);
  // Stages x[m][j .. j + 3] of the current segment (fp32, rounded to bf16 like a bf16
  // activation; with AQ its e4m3 value) into shared memory, with the int4/int8 chunk sums.
  auto stage4 = [&](int m, int j, float* v) {
    if constexpr (AQ != ActQuant::none) {
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = e4m3_to_float(fp8_activation_code(v[e], act_scale[m]));
    }
    if constexpr (kInt4) {
      // 8 lanes hold 32 consecutive k = one chunk: its sums of x' and x.
      float su = v[0] + v[1] + v[2] + v[3];
      v[0] *= 2048.f, v[1] *= 128.f, v[2] *= 2048.f, v[3] *= 128.f;
      float sp = v[0] + v[1] + v[2] + v[3];
#pragma unroll
      for (int o = 1; o < 8; o <<= 1) {
        sp += __shfl_xor_sync(0xffffffffu, sp, o);
        su += __shfl_xor_sync(0xffffffffu, su, o);
      }
      if ((lane & 7) == 0) csum[m * (seg / 32) + j / 32] = make_float2(sp, su);
    }
    if constexpr (kInt8) {
      // 4 lanes hold 16 consecutive k = one lane's int8 chunk: its sum of x' = 2^15 x.
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] *= 32768.f;
      float sp = v[0] + v[1] + v[2] + v[3];
      sp += __shfl_xor_sync(0xffffffffu, sp, 1);
      sp += __shfl_xor_sync(0xffffffffu, sp, 2);
      if ((lane & 3) == 0) csum8[m * (seg / 16) + j / 16] = sp;
    }
    *reinterpret_cast<float4*>(&xs[m * seg + x_slot<E>(j)]) = make_float4(v[0], v[1], v[2], v[3]);
  };
  bool loaded = false;
  if constexpr (IN == GemvInput::rmsnorm) {
    // One round of loads where x fits one segment and the registers (gemv_rmsnorm_onepass).
    if (norm_onepass)
      loaded = gemv_rmsnorm_onepass<M, 4, 2>(
          a, K, Kp, xstride, vec, threadIdx.x, kThreads, nw, late_nw,
          [&](int, float ss) { return block_sum(ss, red); }, stage4, [] {});
    if (loaded) {
      __syncthreads();
      trace_point(TraceKind::gemv, w.data, N, K, TracePoint::rms_done);
      trace_point(TraceKind::gemv, w.data, N, K, TracePoint::prologue_done);
    } else {
      gemv_inv_rms<M>(a, K, xstride, vec, red, inv_rms);
      trace_point(TraceKind::gemv, w.data, N, K, TracePoint::rms_done);
    }
  }

  if constexpr (AQ != ActQuant::none) {
    // Activation scales before any dot product: amax over all of K (one more read of x, so any
    // segmentation of K works), per row, or over every row for per-tensor scaling.
    for (int m = 0; m < M; ++m) {
      float am = 0.f;
      for (int k = threadIdx.x * 4; k < K; k += kThreads * 4) {
        float v[4];
        gemv_x4<IN>(a, m, k, K, xstride, vec, inv_rms[m], v);
        am = fmaxf(am, fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
      }
      am = block_max(am, red);
      if (threadIdx.x == 0) act_scale[m] = am;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float all = 0.f;
      for (int m = 0; m < M; ++m) all = fmaxf(all, act_scale[m]);
      for (int m = 0; m < M; ++m)
        act_scale[m] = fp8_activation_scale(AQ == ActQuant::fp8_tensor ? all : act_scale[m]);
    }
    __syncthreads();
  }

  int parity = 0;
  for (; tile < ntiles; tile += gridDim.x) {
    set_rows(rows, tile);
    float acc[M][R];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) acc[m][r] = 0.f;

    for (int k0 = 0; k0 < Kp; k0 += seg) {
      const int slen = min(seg, Kp - k0);
      if (!(single && loaded)) {
        loaded = true;
        __syncthreads();
        // Prologue: x segment -> shared memory (fp32, rounded to bf16 like a bf16 activation;
        // with AQ its e4m3 value), 4 consecutive k per thread.
        for (int m = 0; m < M; ++m) {
#pragma unroll 4
          for (int j = threadIdx.x * 4; j < slen; j += kThreads * 4) {
            float v[4];
            gemv_x4<IN>(a, m, k0 + j, K, xstride, vec, inv_rms[m], v);
            stage4(m, j, v);
          }
        }
        __syncthreads();
        trace_point(TraceKind::gemv, w.data, N, K, TracePoint::prologue_done);
      }

      const int slice = slen / (32 * E) / ks;  // iterations of this warp's K slice
      const int ibeg = wk * slice, iend = ibeg + slice;
      const int cbase = k0 / E;
      if (!prefetched) {
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (u < slice) load(wv[u], sv[u], rows, cbase, ibeg + u);
      }
      for (int i0 = ibeg; i0 < iend; i0 += U) {
        uint4 nv[U][R];
        uint32_t ns[U][R];
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (i0 + U + u < iend) load(nv[u], ns[u], rows, cbase, i0 + U + u);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (i0 + u >= iend) break;
          const int i = i0 + u;
          // One 16-byte chunk per row and lane: dot products with x into t (acc, or a per-chunk
          // partial for the formats whose chunk sums of x are subtracted afterwards).
          auto dot_chunk = [&](float(&t)[M][R]) {
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
                  t[m][r] = fmaf(x4.x, wf[r].x, t[m][r]);
                  t[m][r] = fmaf(x4.y, wf[r].y, t[m][r]);
                  t[m][r] = fmaf(x4.z, wf[r].z, t[m][r]);
                  t[m][r] = fmaf(x4.w, wf[r].w, t[m][r]);
                }
              }
            }
          };
          if constexpr (kInt4 || kInt8) {
            float part[M][R];
#pragma unroll
            for (int m = 0; m < M; ++m)
#pragma unroll
              for (int r = 0; r < R; ++r) part[m][r] = 0.f;
            dot_chunk(part);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              if constexpr (kInt4) {
                const float2 cs = csum[m * (seg / 32) + i * 32 + lane];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                  const float2 sb = int4_scale_bias(sv[u][r]);
                  acc[m][r] += sb.x * (part[m][r] - cs.x) + sb.y * cs.y;
                }
              } else {
                const float cs = csum8[m * (seg / 16) + i * 32 + lane] * (1.f + 1.f / 256.f);
#pragma unroll
                for (int r = 0; r < R; ++r) acc[m][r] += part[m][r] - cs;
              }
            }
          } else {
            dot_chunk(acc);
          }
        }
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int r = 0; r < R; ++r) {
            wv[u][r] = nv[u][r];
            sv[u][r] = ns[u][r];
          }
      }
      prefetched = false;
    }

    if (!early_dependents && tile + static_cast<int>(gridDim.x) >= ntiles) grid_dependents_launch();
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        acc[m][r] = warp_sum(acc[m][r]);
        if constexpr (AQ != ActQuant::none) acc[m][r] *= act_scale[m];
      }
    if (ks > 1) {  // block-uniform: the K slices' partial sums meet in the slice-0 warp
      float* kr = kred[parity];
      parity ^= 1;
      if (lane == 0 && wk != 0) {
#pragma unroll
        for (int m = 0; m < M; ++m)
#pragma unroll
          for (int r = 0; r < R; ++r) kr[(warp * M + m) * R + r] = acc[m][r];
      }
      __syncthreads();
      if (lane == 0 && wk == 0) {
        for (int j = 1; j < ks; ++j)
#pragma unroll
          for (int m = 0; m < M; ++m)
#pragma unroll
            for (int r = 0; r < R; ++r) acc[m][r] += kr[((warp + j) * M + m) * R + r];
      }
    }

    if (lane == 0 && wk == 0) {
      constexpr bool kPaired = OUT == GemvOutput::rope_kv || OUT == GemvOutput::swiglu;
      constexpr bool kRowScale = F == WeightFormat::int8 || F == WeightFormat::fp8;
      const float* rscale = static_cast<const float*>(w.scale);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int row = (tile * wpt + wr) * R + r;
        if (row >= N || (kPaired && (r & 1))) continue;  // odd rows go with their even partner
        const float s0 = kRowScale ? rscale[row] : 1.f;
        const float s1 = kRowScale && kPaired ? rscale[row + 1] : 1.f;
        float a0[M], a1[M];
#pragma unroll
        for (int m = 0; m < M; ++m) {
          a0[m] = acc[m][r] * s0;
          a1[m] = kPaired ? acc[m][r + 1 < R ? r + 1 : r] * s1 : 0.f;
        }
        gemv_epilogue<M, OUT>(a, N, row, a0, a1);
      }
    }
  }
  if (tracing()) {
    __syncthreads();
    trace_point(TraceKind::gemv, w.data, N, K, TracePoint::end);
  }
}

// GemvTuning::early_dependents, as the kernels' flag.
inline int early_dependents() { return gemv_tuning().early_dependents ? 1 : 0; }

// The kernels' GemvNormFlags: `late` where GemvTuning::norm_weight_before_wait is off; in the
// lab (AO_GEMV_EXPERIMENTS builds) AO_NORM_PREFETCH=0|1 overrides that, and AO_GEMV_RMS2=1 keeps
// the fused RMSNorm in two passes (gemv_inv_rms, then the staging) where gemv_rmsnorm_onepass
// would apply, for comparisons.
inline int norm_flags() {
  int f = gemv_tuning().norm_weight_before_wait ? 0 : GemvNormFlags::late;
#ifdef AO_GEMV_EXPERIMENTS
  static const char* pre = std::getenv("AO_NORM_PREFETCH");
  if (pre) f = pre[0] == '0' ? GemvNormFlags::late : 0;
  static const char* two = std::getenv("AO_GEMV_RMS2");
  if (two && two[0] == '1') f |= GemvNormFlags::two_pass;
#endif
  return f;
}

#include "gemv_int4_mma.cuh"
#include "gemv_tma.cuh"

// AO_GEMV_INT8=deep: 4 iterations in flight instead of 2. Measured slower (run 11: llama3-8b
// int8 tg128 303.5 vs 317.8 tok/s, every int8 GEMV 3-15% slower), so off by default.
inline bool int8_deep_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("AO_GEMV_INT8");
    return e && std::string(e) == "deep";
  }();
  return on;
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int U,
          int R = (F == WeightFormat::int4 ? 4 : 2), int W = kWarps, ActQuant AQ = ActQuant::none>
void launch_u(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);

// Warps per block of the bf16/int8/fp8 kernels: 16 for batch 1, 4 for batches 2-8 (not measured
// with more). Fewer, larger blocks stage x (and its RMSNorm) fewer times and let the 14336-wide
// down projection fit one wave. llama3-8b tg128, 4 -> 8 warps (run 14): bf16 214.6 -> 228.1,
// int8 347.5 -> 364.2 tok/s; 8 -> 16 (run 16): bf16 231.3 -> 236.6, int8 367.6 -> 383.8
// (llama3-1b bf16 1054 -> 1034, int8 1487 -> 1515).
// Kernel lab only (bench/kernels builds with -DAO_GEMV_EXPERIMENTS): AO_GEMV_VARIANT=w4 / w8
// (warps) or u2 (2 loads in flight for bf16 too) overrides the batch-1 choice for comparisons.
template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int U, ActQuant AQ = ActQuant::none>
void launch_w(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
#ifdef AO_GEMV_EXPERIMENTS
  static const int v = [] {
    const char* e = std::getenv("AO_GEMV_VARIANT");
    const std::string s = e ? e : "";
    return s == "w4" ? 4 : s == "w8" ? 8 : s == "u2" ? 2 : 0;
  }();
  if (M == 1 && v == 2) return launch_u<F, M, IN, OUT, 2, 2, 16, AQ>(w, a, s);
  if (M == 1 && v == 4) return launch_u<F, M, IN, OUT, U, 2, 4, AQ>(w, a, s);
  if (M == 1 && v == 8) return launch_u<F, M, IN, OUT, U, 2, 8, AQ>(w, a, s);
#endif
  return launch_u<F, M, IN, OUT, U, 2, (M == 1 ? 16 : 4), AQ>(w, a, s);
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT>
void launch(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  // v8: weights through shared memory by the TMA (fp8: weight-only only).
  if (const TmaPlan p = tma_plan<F>(w, M); p.chunk != 0)
    return launch_tma<F, M, IN, OUT>(w, a, p, s);
  if constexpr (F == WeightFormat::int4) {
    // The register-ring kernels walk K in whole 1024-element steps (gemv_padded_k).
    if (w.k_padded % gemv_k_align(F) != 0)
      fail(
          "gemv: this int4 weight's rows are stored at a K that is not a multiple of 1024 "
          "(gemv_padded_k), which only the TMA kernel takes, and it does not take them at this "
          "batch under the current GemvTuning");
    // v7 tensor-core kernel (gemv_int4_mma.cuh) where eligible, unless GemvTuning says not.
    if (int4_mma_eligible(w, M)) return launch_int4_mma<M, IN, OUT>(w, a, s);
    return launch_u<F, M, IN, OUT, 1>(w, a, s);
  } else if constexpr (F == WeightFormat::int8) {
    // 2 iterations in flight (v5); AO_GEMV_INT8=deep: 4 (as bf16), the slower v7 experiment.
    if (int8_deep_enabled()) return launch_w<F, M, IN, OUT, 4>(w, a, s);
    return launch_w<F, M, IN, OUT, 2>(w, a, s);
  } else if constexpr (F == WeightFormat::fp8) {
    switch (w.act_quant) {
      case ActQuant::fp8_row:
        return launch_w<F, M, IN, OUT, 2, ActQuant::fp8_row>(w, a, s);
      case ActQuant::fp8_tensor:
        return launch_w<F, M, IN, OUT, 2, ActQuant::fp8_tensor>(w, a, s);
      default:
        return launch_w<F, M, IN, OUT, 2>(w, a, s);
    }
  } else {
    return launch_w<F, M, IN, OUT, 4>(w, a, s);
  }
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int U, int R, int W, ActQuant AQ>
void launch_u(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  constexpr int kThreads = W * 32;
  auto kernel = gemv_kernel<F, M, IN, OUT, R, U, W, AQ>;
  // Segment: the whole (padded) K when M rows of fp32 fit 64 KB, else 64 KB / M per segment.
  int seg = static_cast<int>(std::min<int64_t>(w.k_padded, 16384 / M));
  const int align = gemv_k_align(F);
  seg = std::max(align, seg / align * align);
  const size_t smem = static_cast<size_t>(M) * seg * 4 +
                      (F == WeightFormat::int4   ? static_cast<size_t>(M) * (seg / 32) * 8
                       : F == WeightFormat::int8 ? static_cast<size_t>(M) * (seg / 16) * 4
                                                 : 0);
  static bool configured = false;
  static int sms = 0;
  static size_t occ_smem = ~size_t(0);
  static int occ_blocks = 0;
  if (!configured) {
    sms = opt_in_shared_memory(kernel, 96 * 1024);
    configured = true;
  }
  const GemvTuning tune = gemv_tuning();
  auto tiles_for = [&](int ks) {
    const int64_t rows_per_block = static_cast<int64_t>(W / ks) * R;
    return static_cast<int>((w.n + rows_per_block - 1) / rows_per_block);
  };
  int ks = 1;
  int grid = tiles_for(1);
  if (seg >= w.k_padded) {  // persistent: as many blocks as fit at once
    if (smem != occ_smem) {
      AO_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_blocks, kernel, kThreads, smem));
      occ_smem = smem;
    }
    const int slots = std::max(1, occ_blocks) * sms;
    // K split: 1, 2 or 4 warps per row group, each slice a whole number of U iterations, taken
    // only when the unsplit grid's last round of tiles would leave > 30% of the slots idle (then
    // the split whose last round is fullest). Measured (runs 21-22): llama3-1b o/down (64 tiles of
    // 32 rows on 132 SMs) gain from k_split 2; llama3-8b qkv (73% full) lost 4-6% with it.
    const int iters = static_cast<int>(w.k_padded / (32 * Fmt<F>::E));
    auto efficiency = [&](int cand) {
      const int tiles = tiles_for(cand);
      const int rounds = (tiles + slots - 1) / slots;
      return static_cast<double>(tiles) / (static_cast<double>(rounds) * slots);
    };
    auto eligible = [&](int cand) { return W % cand == 0 && iters % (cand * U) == 0; };
    if (tune.k_split != 0) {
      if (eligible(tune.k_split)) ks = tune.k_split;
    } else if (efficiency(1) < 0.7) {
      double best = efficiency(1);
      for (int cand : {2, 4})
        if (eligible(cand) && efficiency(cand) > best + 0.05) best = efficiency(cand), ks = cand;
    }
    grid = std::min(tiles_for(ks), slots);
  }
  record_gemv_launch(GemvLaunch{false, W, ks, grid});
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, s, w, a, seg, ks,
             early_dependents(), norm_flags());
}

// Whether the TMA plan p of int4 weight w (batch 1) can take GemvInput::int4_digits.
inline bool takes_int4_digits(const DeviceWeight& w, const TmaPlan& p) {
  return w.format == WeightFormat::int4 && w.group_size >= 128 && p.chunk != 0 &&
         w.k == w.k_padded && w.k % 128 == 0;
}

template <WeightFormat F, int M>
void dispatch_io(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  using I = GemvInput;
  using O = GemvOutput;
  if (a.input == I::int4_digits) {
    if constexpr (F == WeightFormat::int4 && M == 1) {
      if (a.output != O::add_residual) fail("gemv: int4_digits input needs add_residual output");
      if (a.x == nullptr || reinterpret_cast<uintptr_t>(a.x) % 16 != 0)
        fail("gemv: int4_digits input needs a 16-byte aligned buffer (it is copied by the TMA)");
      const TmaPlan p = tma_plan<F>(w, 1);
      if (!takes_int4_digits(w, p))
        fail(
            "gemv: int4_digits input needs int4 weights in groups of 128 or 256 with K = K "
            "padded, a multiple of 128, on the TMA kernel (gemv_takes_int4_digits)");
      return launch_tma<F, 1, I::int4_digits, O::add_residual>(w, a, p, s);
    }
    fail("gemv: int4_digits input needs int4 weights at batch 1");
  }
  if (a.input == I::rmsnorm && a.output == O::bf16)
    return launch<F, M, I::rmsnorm, O::bf16>(w, a, s);
  if (a.input == I::rmsnorm && a.output == O::f32) return launch<F, M, I::rmsnorm, O::f32>(w, a, s);
  if (a.input == I::bf16 && a.output == O::add_residual)
    return launch<F, M, I::bf16, O::add_residual>(w, a, s);
  if (a.input == I::rmsnorm && a.output == O::rope_kv) {
    if (a.rope.head_dim % 2 != 0 || w.n % a.rope.head_dim != 0)
      fail("gemv: rope_kv output needs an even head_dim dividing the rows");
    return launch<F, M, I::rmsnorm, O::rope_kv>(w, a, s);
  }
  if (a.input == I::rmsnorm && a.output == O::swiglu) {
    if (w.n % 2 != 0) fail("gemv: swiglu output needs an even number of rows");
    return launch<F, M, I::rmsnorm, O::swiglu>(w, a, s);
  }
  if (a.input == I::bf16 && a.output == O::f32) return launch<F, M, I::bf16, O::f32>(w, a, s);
  if (a.input == I::bf16 && a.output == O::bf16) return launch<F, M, I::bf16, O::bf16>(w, a, s);
  fail("gemv: unsupported input/output combination");
}

// Batch 8 (4) as two launches of 4 (2) rows (GemvTuning::tma_split_batch8, tma_split_batch4):
// where the batch would run on neither the TMA kernel nor int4's v7 tensor-core kernel and its half
// runs on one of them or splits in turn (batch 8 of llama3-70b's down: 4 + 4, each as 2 + 2; int4
// batch 8 of llama3-1b's down, which the int4 shape rule keeps off the TMA kernel and whose x is
// past v7's bound: 4 + 4 on v7, where it took the CUDA-core kernel at 80 us). Not for rope_kv,
// whose rows are positions of one launch, nor for per-tensor fp8 activations, whose one scale
// covers all the rows (fp8 with quantized activations has no TMA plan today; the guard keeps the
// split right should it get one).
template <WeightFormat F>
bool gemv_splits(const DeviceWeight& w, const GemvArgs& a, int m) {
  const GemvTuning& tune = gemv_tuning();
  const int mask = m == 8 ? tune.tma_split_batch8 : m == 4 ? tune.tma_split_batch4 : 0;
  if (!(mask & (1 << static_cast<int>(F)))) return false;
  if (a.output == GemvOutput::rope_kv || a.input == GemvInput::int4_digits ||
      w.act_quant == ActQuant::fp8_tensor)
    return false;
  if (tma_plan<F>(w, m).chunk != 0) return false;
  if (F == WeightFormat::int4 && int4_mma_eligible(w, m)) return false;
  return tma_plan<F>(w, m / 2).chunk != 0 ||
         (F == WeightFormat::int4 && int4_mma_eligible(w, m / 2)) || gemv_splits<F>(w, a, m / 2);
}

}  // namespace

template <WeightFormat F>
void gemv_format(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  switch (a.m) {
    case 1:
      return dispatch_io<F, 1>(w, a, s);
    case 2:
      return dispatch_io<F, 2>(w, a, s);
    case 4:
      if (!gemv_splits<F>(w, a, 4)) return dispatch_io<F, 4>(w, a, s);
      break;
    case 8:
      if (!gemv_splits<F>(w, a, 8)) return dispatch_io<F, 8>(w, a, s);
      break;
    default:
      break;
  }
  // 3, 5, 6, 7 (and 4 and 8 above): the largest power of two below m first, then the rest.
  if (a.output == GemvOutput::rope_kv) fail("gemv: rope_kv output needs batch 1, 2, 4 or 8");
  if (w.act_quant == ActQuant::fp8_tensor)
    fail(
        "gemv: per-tensor fp8 activation quantization needs batch 1, 2, 4 or 8 (one scale "
        "over all rows; use the FP8 GEMM for other batches)");
  const int first = a.m > 4 ? 4 : 2;
  GemvArgs head = a;
  head.m = first;
  gemv_format<F>(w, head, s);
  GemvArgs rest = a;
  rest.m = a.m - first;
  const int64_t K = w.k;
  const int64_t xs = a.x_stride ? a.x_stride : K;
  const size_t xel = a.input == GemvInput::rmsnorm ? 4 : 2;
  rest.x = static_cast<const uint8_t*>(a.x) + first * xs * xel;
  rest.x_stride = xs;
  const size_t yel = a.output == GemvOutput::bf16 ? 2 : 4;
  const int64_t ycols = a.output == GemvOutput::swiglu ? w.n / 2 : w.n;
  rest.y = static_cast<uint8_t*>(a.y) + first * ycols * (a.output == GemvOutput::swiglu ? 2 : yel);
  gemv_format<F>(w, rest, s);
}
}  // namespace ao::cuda

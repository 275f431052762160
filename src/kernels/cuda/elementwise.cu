// Elementwise and row kernels: conversion, random fill, embedding, residual add + RMSNorm,
// SwiGLU, RoPE with KV-cache append.
#include <cuda_fp16.h>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"
#include "trace.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

__global__ void convert_kernel(const void* src, int dt, uint16_t* dst, int64_t rows, int64_t cols,
                               int64_t dst_stride) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  float v;
  if (dt == 0) {
    v = static_cast<const float*>(src)[i];
  } else if (dt == 1) {
    v = __half2float(static_cast<const __half*>(src)[i]);
  } else {
    dst[r * dst_stride + c] = static_cast<const uint16_t*>(src)[i];
    return;
  }
  dst[r * dst_stride + c] = float_to_bf16_bits(v);
}

__global__ void bf16_to_f32_kernel(const uint16_t* src, int64_t n, float* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = bf16_bits_to_float(src[i]);
}

__global__ void gather_rows_kernel(const uint16_t* src, const int32_t* perm, int64_t rows,
                                   int64_t cols, uint16_t* dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[i] = src[static_cast<int64_t>(perm[r]) * cols + c];
}

__global__ void fill_random_kernel(uint16_t* dst, int64_t n, float a, uint64_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = float_to_bf16_bits((2.f * uniform01(seed, i) - 1.f) * a);
}

__global__ void fill_kernel(uint16_t* dst, int64_t n, uint16_t v) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = v;
}

// Rows up to kEmbedThreads * kEmbedRegs columns are read in one round of loads into registers
// before the next kernel may launch: the qkv GEMV's weight stream, once launched, queued the
// row's loads behind it (the decode step's trace: 9.9 us for the embedding of one token at
// llama3-8b's int4 g128, run 172). Longer rows let it launch first, as before.
constexpr int kEmbedThreads = 256, kEmbedRegs = 32;
// grid_dependents_launch() with a memory clobber: not moved above the loads issued before it.
__device__ __forceinline__ void dependents_launch_after_loads() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__global__ void __launch_bounds__(kEmbedThreads)
    embedding_kernel(const uint16_t* embed, const int32_t* tokens, int dim, float* residual) {
  trace_point(TraceKind::embedding, embed, dim, 0, TracePoint::start);
  const int m = blockIdx.x;
  const int64_t t = tokens[m];
  const uint16_t* row = embed + t * dim;
  float* out = residual + static_cast<int64_t>(m) * dim;
  if (dim <= kEmbedThreads * kEmbedRegs) {
    uint16_t r[kEmbedRegs];
#pragma unroll
    for (int j = 0; j < kEmbedRegs; ++j) {
      const int i = threadIdx.x + j * kEmbedThreads;
      if (i < dim) r[j] = row[i];
    }
    dependents_launch_after_loads();  // the qkv GEMV may start streaming its weights
#pragma unroll
    for (int j = 0; j < kEmbedRegs; ++j) {
      const int i = threadIdx.x + j * kEmbedThreads;
      if (i < dim) out[i] = bf16_bits_to_float(r[j]);
    }
  } else {
    grid_dependents_launch();
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = bf16_bits_to_float(row[i]);
  }
  if (tracing()) {
    __syncthreads();
    trace_point(TraceKind::embedding, embed, dim, 0, TracePoint::end);
  }
}

__global__ void add_rmsnorm_kernel(float* residual, const uint16_t* delta, const uint16_t* weight,
                                   float eps, int dim, uint16_t* out) {
  __shared__ float red[32];
  const int64_t m = blockIdx.x;
  float* x = residual + m * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = x[i];
    if (delta) {
      v += bf16_bits_to_float(delta[m * dim + i]);
      x[i] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float inv = rsqrtf(ss / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x)
    out[m * dim + i] = float_to_bf16_bits(round_bf16(x[i] * inv) * bf16_bits_to_float(weight[i]));
}

__global__ void swiglu_kernel(const uint16_t* gu, int64_t m, int hidden, uint16_t* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * hidden) return;
  const int64_t r = i / hidden, j = i % hidden;
  const float g = bf16_bits_to_float(gu[r * 2 * hidden + 2 * j]);
  const float u = bf16_bits_to_float(gu[r * 2 * hidden + 2 * j + 1]);
  out[i] = float_to_bf16_bits(round_bf16(g / (1.f + __expf(-g))) * u);
}

__global__ void apply_outer_scales_kernel(const float* d, int64_t m, int64_t n,
                                          const float* row_scale, const float* col_scale,
                                          uint16_t* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * n) return;
  y[i] = float_to_bf16_bits(d[i] * row_scale[i / n] * col_scale[i % n]);
}

// One block per token; threads over (head, pair). Heads 0..H-1 are q, H..H+KV-1 are k, then v.
__global__ void rope_kv_append_kernel(const uint16_t* qkv, const int32_t* pos, RopeArgs a,
                                      uint16_t* q_out, uint16_t* k_cache, uint16_t* v_cache) {
  const int m = blockIdx.x;
  const int p = *pos + m;
  const int hd = a.head_dim, half = hd / 2;
  const int heads = a.n_heads + 2 * a.n_kv_heads;
  const uint16_t* row = qkv + static_cast<int64_t>(m) * heads * hd;
  for (int t = threadIdx.x; t < heads * half; t += blockDim.x) {
    const int h = t / half, i = t % half;
    int i0, i1;  // the pair rotated together, in output order
    if (a.interleaved) {
      i0 = 2 * i;
      i1 = 2 * i + 1;
    } else {
      i0 = i;
      i1 = i + half;
    }
    const int in0 = a.paired ? 2 * i : i0, in1 = a.paired ? 2 * i + 1 : i1;
    float x0 = bf16_bits_to_float(row[h * hd + in0]);
    float x1 = bf16_bits_to_float(row[h * hd + in1]);
    if (a.bias) {
      x0 = round_bf16(x0 + bf16_bits_to_float(a.bias[h * hd + i0]));
      x1 = round_bf16(x1 + bf16_bits_to_float(a.bias[h * hd + i1]));
    }
    if (h < a.n_heads + a.n_kv_heads) {
      float sn, cs;
      sincosf(static_cast<float>(p) * a.inv_freq[i], &sn, &cs);
      const float y0 = x0 * cs - x1 * sn;
      const float y1 = x1 * cs + x0 * sn;
      x0 = y0;
      x1 = y1;
    }
    uint16_t* dst;
    if (h < a.n_heads) {
      dst = q_out + (static_cast<int64_t>(m) * a.n_heads + h) * hd;
    } else if (h < a.n_heads + a.n_kv_heads) {
      dst = k_cache + (static_cast<int64_t>(h - a.n_heads) * a.max_seq + p) * hd;
    } else {
      dst = v_cache + (static_cast<int64_t>(h - a.n_heads - a.n_kv_heads) * a.max_seq + p) * hd;
    }
    dst[i0] = float_to_bf16_bits(x0);
    dst[i1] = float_to_bf16_bits(x1);
  }
}

}  // namespace

void convert_to_bf16(const void* src, int src_dtype, uint16_t* dst, int64_t rows, int64_t cols,
                     int64_t dst_stride, cudaStream_t s) {
  convert_kernel<<<blocks_for(rows * cols, 256), 256, 0, s>>>(src, src_dtype, dst, rows, cols,
                                                              dst_stride);
  AO_CUDA_CHECK(cudaGetLastError());
}

void bf16_to_f32(const uint16_t* src, int64_t n, float* dst, cudaStream_t s) {
  bf16_to_f32_kernel<<<blocks_for(n, 256), 256, 0, s>>>(src, n, dst);
  AO_CUDA_CHECK(cudaGetLastError());
}

void gather_rows(const uint16_t* src, const int32_t* perm, int64_t rows, int64_t cols,
                 uint16_t* dst, cudaStream_t s) {
  gather_rows_kernel<<<blocks_for(rows * cols, 256), 256, 0, s>>>(src, perm, rows, cols, dst);
  AO_CUDA_CHECK(cudaGetLastError());
}

void fill_random_bf16(uint16_t* dst, int64_t n, float a, uint64_t seed, cudaStream_t s) {
  fill_random_kernel<<<1024, 256, 0, s>>>(dst, n, a, seed);
  AO_CUDA_CHECK(cudaGetLastError());
}

void fill_bf16(uint16_t* dst, int64_t n, float v, cudaStream_t s) {
  __nv_bfloat16 h = __float2bfloat16_rn(v);
  fill_kernel<<<1024, 256, 0, s>>>(dst, n, *reinterpret_cast<uint16_t*>(&h));
  AO_CUDA_CHECK(cudaGetLastError());
}

void embedding(const uint16_t* embed, const int32_t* tokens, int m, int dim, float* residual,
               cudaStream_t s) {
  embedding_kernel<<<m, kEmbedThreads, 0, s>>>(embed, tokens, dim, residual);
  AO_CUDA_CHECK(cudaGetLastError());
}

void add_rmsnorm(float* residual, const uint16_t* delta, const uint16_t* weight, float eps, int m,
                 int dim, uint16_t* out, cudaStream_t s) {
  add_rmsnorm_kernel<<<m, 512, 0, s>>>(residual, delta, weight, eps, dim, out);
  AO_CUDA_CHECK(cudaGetLastError());
}

void swiglu(const uint16_t* gate_up, int m, int hidden, uint16_t* out, cudaStream_t s) {
  swiglu_kernel<<<blocks_for(static_cast<int64_t>(m) * hidden, 256), 256, 0, s>>>(gate_up, m,
                                                                                  hidden, out);
  AO_CUDA_CHECK(cudaGetLastError());
}

void apply_outer_scales(const float* d, int m, int64_t n, const float* row_scale,
                        const float* col_scale, uint16_t* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(m) * n;
  apply_outer_scales_kernel<<<blocks_for(total, 256), 256, 0, s>>>(d, m, n, row_scale, col_scale,
                                                                   y);
  AO_CUDA_CHECK(cudaGetLastError());
}

void rope_kv_append(const uint16_t* qkv, int m, const int32_t* pos, const RopeArgs& a,
                    uint16_t* q_out, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t s) {
  rope_kv_append_kernel<<<m, 256, 0, s>>>(qkv, pos, a, q_out, k_cache, v_cache);
  AO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ao::cuda

AO_KERNEL_TRACE_TU(elementwise)

// Weight quantization on the device (TorchAO numerics, NUMERICS.md) into the padded layouts
// the GEMV kernels read, dequantization back to bf16 for the prefill GEMMs, and the dynamic fp8
// quantization of activations for the FP8 GEMM.
#include <cuda_fp8.h>

#include <string>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"
#include "fp8_activation.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

// int8 weight-only, symmetric per row: scale = max(-min(x,0), max(x,0)) / 127.5 (>= fp32 eps),
// q = clamp(rint(x * (1 / scale)), -128, 127).
__global__ void quantize_int8_rows(const uint16_t* w, int64_t K, int64_t Kp, int8_t* q,
                                   float* scale) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const uint16_t* x = w + row * K;
  float mn = 0.f, mx = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float v = bf16_bits_to_float(x[k]);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  mx = block_max(mx, red);
  mn = -block_max(-mn, red);
  const float s = fmaxf(fmaxf(-mn, mx) / 127.5f, 1.1920929e-07f);
  const float inv = 1.f / s;
  for (int64_t k = threadIdx.x; k < Kp; k += blockDim.x) {
    float v = 0.f;
    if (k < K) v = fminf(fmaxf(rintf(bf16_bits_to_float(x[k]) * inv), -128.f), 127.f);
    q[row * Kp + k] = static_cast<int8_t>(v);
  }
  if (threadIdx.x == 0) scale[row] = s;
}

// int4 weight-only (plain Int4Tensor): per group, scale = clamp(max - min, 1e-6) / 15,
// zero = min + 8 scale, q = clamp(rint((x - min) / scale), 0, 15) in fp32; scale and zero are
// then stored in bf16 (TorchAO's int4_row_quantize_zp casts both to the weight's dtype), and
// deq = (q - 8) scale + zero with the stored values.
// One thread per (row, group of 8 elements); a warp covers 256 consecutive elements.
__global__ void quantize_int4_groups(const uint16_t* w, int64_t N, int64_t K, int64_t Kp, int g,
                                     uint32_t* q, uint32_t* sb) {
  const int64_t groups = Kp / g;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= N * groups) return;
  const int64_t row = t / groups, grp = t % groups;
  const int64_t k0 = grp * g;
  const uint16_t* x = w + row * K;
  float mn = INFINITY, mx = -INFINITY;
  for (int j = 0; j < g; ++j) {
    const int64_t k = k0 + j;
    if (k < K) {
      const float v = bf16_bits_to_float(x[k]);
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
    }
  }
  if (mn > mx) mn = mx = 0.f;  // a group entirely in the padding
  const float s = fmaxf(mx - mn, 1e-6f) / 15.f;
  const float zero = mn + 8.f * s;
  for (int j = 0; j < g; j += 8) {
    uint32_t word = 0;
    for (int e = 0; e < 8; ++e) {
      const int64_t k = k0 + j + e;
      uint32_t qv = 0;
      if (k < K) {
        const float v = bf16_bits_to_float(x[k]);
        qv = static_cast<uint32_t>(fminf(fmaxf(rintf((v - mn) / s), 0.f), 15.f));
      } else {
        qv = 8;  // with s applied to the padding group this is (8 - 8) s + zero; x is 0 there
      }
      word |= qv << (4 * e);
    }
    q[(row * Kp + k0 + j) / 8] = word;
  }
  sb[int4_scale_index(row, grp, groups)] =
      int4_pack_scale(float_to_bf16_bits(s), float_to_bf16_bits(zero));
}

__global__ void amax_all(const uint16_t* w, int64_t n, float* amax) {
  __shared__ float red[32];
  float m = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(bf16_bits_to_float(w[i])));
  m = block_max(m, red);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(amax), __float_as_uint(m));
}

// fp8 e4m3 (Float8Tensor inference convention): scale = amax / 448 per row or per tensor,
// q = e4m3(clamp(x / scale, -448, 448)) (round to nearest even, saturating). An all-zero row
// (or tensor) gets scale 1 so that q = 0.
__global__ void quantize_fp8_rows(const uint16_t* w, int64_t K, int64_t Kp,
                                  const float* tensor_amax, __nv_fp8_storage_t* q, float* scale) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const uint16_t* x = w + row * K;
  const float amax = tensor_amax ? *tensor_amax : block_max(row_abs_max_part(x, K), red);
  const float s = amax > 0.f ? amax / 448.f : 1.f;
  for (int64_t k = threadIdx.x; k < Kp; k += blockDim.x) {
    float v = 0.f;
    if (k < K) v = fminf(fmaxf(bf16_bits_to_float(x[k]) / s, -448.f), 448.f);
    q[row * Kp + k] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  }
  if (threadIdx.x == 0) scale[row] = s;
}

// Activations: max |x| of each row (one block per row), the first pass of per-tensor scaling.
__global__ void activation_row_amax(const uint16_t* x, int64_t x_stride, int64_t k, float* amax) {
  __shared__ float red[32];
  const float a = block_max(row_abs_max_part(x + blockIdx.x * x_stride, k), red);
  if (threadIdx.x == 0) amax[blockIdx.x] = a;
}

// One block per row: the scale (own amax, or the max over every row's amax for per-tensor),
// then the codes of the row and its zero padding up to q_stride.
template <bool kPerTensor>
__global__ void quantize_activation_rows(const uint16_t* x, int64_t x_stride, int m, int64_t k,
                                         const float* row_amax, __nv_fp8_storage_t* q,
                                         int64_t q_stride, float* scale) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const uint16_t* xr = x + row * x_stride;
  float part = 0.f;
  if constexpr (kPerTensor) {
    for (int i = threadIdx.x; i < m; i += blockDim.x) part = fmaxf(part, row_amax[i]);
  } else {
    part = row_abs_max_part(xr, k);
  }
  const float s = fp8_activation_scale(block_max(part, red));
  __nv_fp8_storage_t* qr = q + row * q_stride;
  for (int64_t i = threadIdx.x; i < q_stride; i += blockDim.x)
    qr[i] = i < k ? fp8_activation_code(bf16_bits_to_float(xr[i]), s) : __nv_fp8_storage_t(0);
  if (threadIdx.x == 0) scale[row] = s;
}

template <WeightFormat F>
__device__ __forceinline__ void dequantize_chunks(const void* data, const void* scale,
                                                  int64_t row, int Kp, int g, float sc, uint4* dst);

// One block per row, 8 consecutive elements (one 16-byte store) per thread and step; Kp is a
// multiple of 8 for every format (gemv_k_align).
template <WeightFormat F>
__global__ void __launch_bounds__(256)
    dequantize_rows(const void* data, const void* scale, int Kp, int g, int64_t row0,
                    uint16_t* out) {
  const int64_t row = row0 + blockIdx.x;
  uint4* dst = reinterpret_cast<uint4*>(out + static_cast<int64_t>(blockIdx.x) * Kp);
  float sc = 1.f;
  if constexpr (F == WeightFormat::int8 || F == WeightFormat::fp8)
    sc = static_cast<const float*>(scale)[row];
  if constexpr (F == WeightFormat::bf16) {
    for (int c = threadIdx.x; c < Kp / 8; c += blockDim.x)
      dst[c] = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(data) + row * Kp)[c];
  } else {
    dequantize_chunks<F>(data, scale, row, Kp, g, sc, dst);
  }
}

template <WeightFormat F>
__device__ __forceinline__ void dequantize_chunks(const void* data, const void* scale,
                                                  int64_t row, int Kp, int g, float sc, uint4* dst) {
  for (int c = threadIdx.x; c < Kp / 8; c += blockDim.x) {
    float v[8];
    if constexpr (F == WeightFormat::int8) {
      const uint2 q = reinterpret_cast<const uint2*>(static_cast<const int8_t*>(data) + row * Kp)[c];
      const uint32_t w2[2] = {q.x, q.y};
#pragma unroll
      for (int e = 0; e < 8; ++e)
        v[e] = static_cast<float>(static_cast<int8_t>(w2[e / 4] >> (8 * (e % 4)))) * sc;
    } else if constexpr (F == WeightFormat::fp8) {
      const uint2 q = reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(data) + row * Kp)[c];
      const uint32_t w2[2] = {q.x, q.y};
#pragma unroll
      for (int e = 0; e < 8; e += 2) {
        __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((w2[e / 4] >> (8 * (e % 4))) & 0xffffu), __NV_E4M3);
        const float2 f = __half22float2(*reinterpret_cast<__half2*>(&h));
        v[e] = f.x * sc;
        v[e + 1] = f.y * sc;
      }
    } else {  // int4: one 32-bit word = 8 nibbles, element k in nibble k % 8
      const uint32_t word =
          reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(data) + row * (Kp / 2))[c];
      const float2 sb = int4_scale_bias(
          static_cast<const uint32_t*>(scale)[int4_scale_index(row, (c * 8) / g, Kp / g)]);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = static_cast<float>((word >> (4 * e)) & 15u) * sb.x + sb.y;
    }
    uint32_t o[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
      o[e] = static_cast<uint32_t>(float_to_bf16_bits(v[2 * e])) |
             (static_cast<uint32_t>(float_to_bf16_bits(v[2 * e + 1])) << 16);
    dst[c] = make_uint4(o[0], o[1], o[2], o[3]);
  }
}

}  // namespace

void quantize_weight(const uint16_t* w, DeviceWeight& d, bool fp8_per_tensor, float* scratch,
                     cudaStream_t s) {
  switch (d.format) {
    case WeightFormat::bf16:
      AO_CUDA_CHECK(cudaMemsetAsync(d.data, 0, d.bytes(), s));
      AO_CUDA_CHECK(cudaMemcpy2DAsync(d.data, d.k_padded * 2, w, d.k * 2, d.k * 2, d.n,
                                      cudaMemcpyDeviceToDevice, s));
      break;
    case WeightFormat::int8:
      quantize_int8_rows<<<static_cast<unsigned>(d.n), 256, 0, s>>>(
          w, d.k, d.k_padded, static_cast<int8_t*>(d.data), static_cast<float*>(d.scale));
      break;
    case WeightFormat::int4: {
      if (d.group_size % 32 != 0 || d.k_padded % d.group_size != 0)
        fail("quantize_weight: int4 group size must be a multiple of 32 dividing the padded K");
      const int64_t n = d.n * (d.k_padded / d.group_size);
      // The last tile's rows past N (tile-major scales: int4_scale_index) stay zero.
      if (d.n % 16 != 0) AO_CUDA_CHECK(cudaMemsetAsync(d.scale, 0, d.scale_bytes(), s));
      quantize_int4_groups<<<blocks_for(n, 128), 128, 0, s>>>(w, d.n, d.k, d.k_padded, d.group_size,
                                                              static_cast<uint32_t*>(d.data),
                                                              static_cast<uint32_t*>(d.scale));
      break;
    }
    case WeightFormat::fp8:
      if (fp8_per_tensor) {
        AO_CUDA_CHECK(cudaMemsetAsync(scratch, 0, sizeof(float), s));
        amax_all<<<264, 256, 0, s>>>(w, d.n * d.k, scratch);
      }
      quantize_fp8_rows<<<static_cast<unsigned>(d.n), 256, 0, s>>>(
          w, d.k, d.k_padded, fp8_per_tensor ? scratch : nullptr,
          static_cast<__nv_fp8_storage_t*>(d.data), static_cast<float*>(d.scale));
      break;
  }
  AO_CUDA_CHECK(cudaGetLastError());
}

void quantize_activation_fp8(const uint16_t* x, int64_t x_stride, int m, int64_t k, ActQuant mode,
                             uint8_t* q, int64_t q_stride, float* scale, float* workspace,
                             cudaStream_t s) {
  if (m < 1 || k < 1 || x_stride < k || q_stride < k)
    fail("quantize_activation_fp8: needs m, k >= 1 and row strides >= k");
  auto* qd = reinterpret_cast<__nv_fp8_storage_t*>(q);
  const unsigned rows = static_cast<unsigned>(m);
  switch (mode) {
    case ActQuant::fp8_row:
      quantize_activation_rows<false>
          <<<rows, 256, 0, s>>>(x, x_stride, m, k, nullptr, qd, q_stride, scale);
      break;
    case ActQuant::fp8_tensor:
      if (!workspace) fail("quantize_activation_fp8: per-tensor scaling needs a workspace");
      activation_row_amax<<<rows, 256, 0, s>>>(x, x_stride, k, workspace);
      quantize_activation_rows<true>
          <<<rows, 256, 0, s>>>(x, x_stride, m, k, workspace, qd, q_stride, scale);
      break;
    case ActQuant::none:
      fail("quantize_activation_fp8: mode is none");
  }
  AO_CUDA_CHECK(cudaGetLastError());
}

void dequantize_weight_rows(const DeviceWeight& w, int64_t row0, int64_t rows, uint16_t* out,
                            cudaStream_t s) {
  if (w.k_padded % 8 != 0 || w.k_padded > INT32_MAX) fail("dequantize_weight: bad padded K");
  if (row0 < 0 || rows < 0 || row0 + rows > w.n || rows > INT32_MAX)
    fail(("dequantize_weight_rows: rows [" + std::to_string(row0) + ", " +
          std::to_string(row0 + rows) + ") outside the weight's " + std::to_string(w.n) + " rows")
             .c_str());
  if (rows == 0) return;
  const dim3 grid(static_cast<unsigned>(rows)), block(256);
  const int Kp = static_cast<int>(w.k_padded);
  switch (w.format) {
    case WeightFormat::bf16:
      dequantize_rows<WeightFormat::bf16><<<grid, block, 0, s>>>(w.data, w.scale, Kp, 0, row0, out);
      break;
    case WeightFormat::int8:
      dequantize_rows<WeightFormat::int8><<<grid, block, 0, s>>>(w.data, w.scale, Kp, 0, row0, out);
      break;
    case WeightFormat::fp8:
      dequantize_rows<WeightFormat::fp8><<<grid, block, 0, s>>>(w.data, w.scale, Kp, 0, row0, out);
      break;
    case WeightFormat::int4:
      dequantize_rows<WeightFormat::int4>
          <<<grid, block, 0, s>>>(w.data, w.scale, Kp, w.group_size, row0, out);
      break;
  }
  AO_CUDA_CHECK(cudaGetLastError());
}

namespace {
__global__ void int4_scale_planes_kernel(const uint32_t* words, int64_t n, int64_t groups,
                                         int64_t ld, uint16_t* sp, uint16_t* zp) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= groups * ld) return;
  const int64_t g = i / ld, r = i % ld;
  uint16_t sb = 0, zb = 0;
  if (r < n) {
    const uint32_t word = words[int4_scale_index(r, g, groups)];
    sb = static_cast<uint16_t>(word & 0xffffu);
    const float sf = bf16_bits_to_float(sb), zero = bf16_bits_to_float(static_cast<uint16_t>(word >> 16));
    zb = float_to_bf16_bits(fmaf(-8.f, sf, zero));  // int4_scale_bias's fp32 value
  }
  sp[i] = sb;
  zp[i] = zb;
}
__global__ void row_scale_plane_kernel(const float* scale, int64_t n, int64_t ld, uint16_t* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < ld) out[i] = i < n ? float_to_bf16_bits(scale[i]) : uint16_t{0};
}
}  // namespace

void row_scale_plane(const DeviceWeight& w, uint16_t* plane, int64_t ld, cudaStream_t s) {
  if ((w.format != WeightFormat::int8 && w.format != WeightFormat::fp8) || ld < w.n)
    fail("row_scale_plane: needs an int8 or fp8 weight and ld >= N");
  row_scale_plane_kernel<<<blocks_for(ld, 256), 256, 0, s>>>(static_cast<const float*>(w.scale),
                                                             w.n, ld, plane);
  AO_CUDA_CHECK(cudaGetLastError());
}

void int4_scale_planes(const DeviceWeight& w, uint16_t* s_plane, uint16_t* z_plane, int64_t ld,
                       cudaStream_t s) {
  if (w.format != WeightFormat::int4 || w.group_size <= 0 || w.k_padded % w.group_size != 0 ||
      ld < w.n)
    fail("int4_scale_planes: needs an int4 weight and ld >= N");
  const int64_t groups = w.k_padded / w.group_size;
  int4_scale_planes_kernel<<<blocks_for(groups * ld, 256), 256, 0, s>>>(
      static_cast<const uint32_t*>(w.scale), w.n, groups, ld, s_plane, z_plane);
  AO_CUDA_CHECK(cudaGetLastError());
}

void dequantize_weight(const DeviceWeight& w, uint16_t* out, cudaStream_t s) {
  dequantize_weight_rows(w, 0, w.n, out, s);
}

}  // namespace ao::cuda

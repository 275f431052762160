// Attention over the KV cache (layout per layer [n_kv_heads, max_seq, head_dim] bf16).
// Decode: split-KV flash decoding: a block per (kv head, chunk of kDecodeChunk positions)
// serves all query heads of the group (GQA: each K/V row is read once), writes an unnormalized
// partial (max, sum, acc) per (head, chunk); a combine kernel merges the chunks. The grid covers
// the cache capacity and blocks past the current position exit, so one CUDA graph serves every
// position (*pos lives in device memory).
// Prefill: a block per (8 query rows, head); K/V tiles of 32 keys in shared memory; one lane per
// key for the scores, one lane per output dimension for P V; online softmax, causal.
#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

constexpr int kDecodeChunk = 64;
constexpr int kDecodeWarps = 4;

template <int G, int DPL>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attn_decode_split(const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                      const int32_t* pos, AttentionArgs a, float* partial) {
  const int kvh = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y;
  const int len = *pos + 1;
  const int start = split * kDecodeChunk;
  if (start >= len) return;
  const int end = min(len, start + kDecodeChunk);
  const int hd = a.head_dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float qr[G][DPL];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + 32 * t;
      qr[g][t] = d < hd ? bf16_bits_to_float(q[(kvh * G + g) * hd + d]) * a.scale : 0.f;
    }
  float mx[G], l[G], acc[G][DPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    mx[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int t = 0; t < DPL; ++t) acc[g][t] = 0.f;
  }
  const uint16_t* kbase = kc + static_cast<int64_t>(kvh) * a.max_seq * hd;
  const uint16_t* vbase = vc + static_cast<int64_t>(kvh) * a.max_seq * hd;
  for (int p = start + warp; p < end; p += kDecodeWarps) {
    float kr[DPL], vr[DPL];
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + 32 * t;
      kr[t] = d < hd ? bf16_bits_to_float(kbase[static_cast<int64_t>(p) * hd + d]) : 0.f;
      vr[t] = d < hd ? bf16_bits_to_float(vbase[static_cast<int64_t>(p) * hd + d]) : 0.f;
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.f;
#pragma unroll
      for (int t = 0; t < DPL; ++t) s = fmaf(qr[g][t], kr[t], s);
      s = warp_sum(s);
      const float mnew = fmaxf(mx[g], s);
      const float corr = __expf(mx[g] - mnew);
      const float pw = __expf(s - mnew);
      l[g] = l[g] * corr + pw;
#pragma unroll
      for (int t = 0; t < DPL; ++t) acc[g][t] = acc[g][t] * corr + pw * vr[t];
      mx[g] = mnew;
    }
  }
  // Merge the warps through shared memory.
  __shared__ float sm[kDecodeWarps][G][2];
  __shared__ float sacc[kDecodeWarps][G][DPL * 32];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) {
      sm[warp][g][0] = mx[g];
      sm[warp][g][1] = l[g];
    }
#pragma unroll
    for (int t = 0; t < DPL; ++t) sacc[warp][g][lane + 32 * t] = acc[g][t];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd;
    float M = -INFINITY;
    for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, sm[w][g][0]);
    float L = 0.f, A = 0.f;
    for (int w = 0; w < kDecodeWarps; ++w) {
      if (sm[w][g][0] == -INFINITY) continue;
      const float c = __expf(sm[w][g][0] - M);
      L += sm[w][g][1] * c;
      A += sacc[w][g][d] * c;
    }
    float* out = partial + (static_cast<int64_t>(kvh * G + g) * nsplit + split) * (hd + 2);
    out[2 + d] = A;
    if (d == 0) {
      out[0] = M;
      out[1] = L;
    }
  }
}

__global__ void attn_decode_combine(const float* partial, const int32_t* pos, int nsplit, int hd,
                                    uint16_t* out) {
  const int h = blockIdx.x;
  const int used = (*pos + kDecodeChunk) / kDecodeChunk;  // chunks holding 0..*pos
  const float* ph = partial + static_cast<int64_t>(h) * nsplit * (hd + 2);
  float M = -INFINITY;
  for (int s = 0; s < used; ++s) M = fmaxf(M, ph[s * (hd + 2)]);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float L = 0.f, A = 0.f;
    for (int s = 0; s < used; ++s) {
      const float c = __expf(ph[s * (hd + 2)] - M);
      L += ph[s * (hd + 2) + 1] * c;
      A += ph[s * (hd + 2) + 2 + d] * c;
    }
    out[h * hd + d] = float_to_bf16_bits(A / L);
  }
}

constexpr int kPrefillRows = 8;  // query rows (warps) per block
constexpr int kTile = 32;        // keys per tile

template <int DPL>
__global__ void __launch_bounds__(kPrefillRows * 32)
    attn_prefill_kernel(const uint16_t* q, int m, const uint16_t* kc, const uint16_t* vc,
                        const int32_t* pos, AttentionArgs a, uint16_t* out) {
  extern __shared__ float psm[];
  const int hd = a.head_dim;
  const int G = a.n_heads / a.n_kv_heads;
  const int h = blockIdx.y, kvh = h / G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int p0 = *pos;
  const int qi = blockIdx.x * kPrefillRows + warp;
  const int p = p0 + qi;  // this warp's position
  const int last_row = min(m - 1, static_cast<int>(blockIdx.x) * kPrefillRows + kPrefillRows - 1);
  const int kmax = p0 + last_row;  // last key any warp needs
  const int kstride = hd + 2;      // padded K row (bf16 elements): no bank conflicts
  float* qs = psm;                                                   // [rows][hd]
  uint16_t* ks = reinterpret_cast<uint16_t*>(qs + kPrefillRows * hd);  // [kTile][hd + 2]
  uint16_t* vs = ks + kTile * kstride;                               // [kTile][hd]

  if (qi < m)
    for (int d = lane; d < hd; d += 32)
      qs[warp * hd + d] =
          bf16_bits_to_float(q[(static_cast<int64_t>(qi) * a.n_heads + h) * hd + d]) * a.scale;
  float mx = -INFINITY, l = 0.f, acc[DPL];
#pragma unroll
  for (int t = 0; t < DPL; ++t) acc[t] = 0.f;
  const uint16_t* kbase = kc + static_cast<int64_t>(kvh) * a.max_seq * hd;
  const uint16_t* vbase = vc + static_cast<int64_t>(kvh) * a.max_seq * hd;

  for (int j0 = 0; j0 <= kmax; j0 += kTile) {
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * hd; i += blockDim.x) {
      const int j = i / hd, d = i % hd;
      const int key = j0 + j;
      uint16_t kv = 0, vv = 0;
      if (key <= kmax) {
        kv = kbase[static_cast<int64_t>(key) * hd + d];
        vv = vbase[static_cast<int64_t>(key) * hd + d];
      }
      ks[j * kstride + d] = kv;
      vs[j * hd + d] = vv;
    }
    __syncthreads();
    if (qi >= m || j0 > p) continue;
    const int key = j0 + lane;
    float s = -INFINITY;
    if (key <= p) {
      s = 0.f;
      const uint32_t* kr = reinterpret_cast<const uint32_t*>(ks + lane * kstride);
      const float* qw = qs + warp * hd;
      for (int d2 = 0; d2 < hd / 2; ++d2) {
        const uint32_t kk = kr[d2];
        s = fmaf(qw[2 * d2], __uint_as_float(kk << 16), s);
        s = fmaf(qw[2 * d2 + 1], __uint_as_float(kk & 0xffff0000u), s);
      }
    }
    const float mnew = fmaxf(mx, warp_max(s));
    const float corr = __expf(mx - mnew);
    const float pw = key <= p ? __expf(s - mnew) : 0.f;
    l = l * corr + warp_sum(pw);
#pragma unroll
    for (int t = 0; t < DPL; ++t) acc[t] *= corr;
    const int jn = min(kTile, p - j0 + 1);
    for (int j = 0; j < jn; ++j) {
      const float pj = __shfl_sync(0xffffffffu, pw, j);
#pragma unroll
      for (int t = 0; t < DPL; ++t) {
        const int d = lane + 32 * t;
        if (d < hd) acc[t] = fmaf(pj, bf16_bits_to_float(vs[j * hd + d]), acc[t]);
      }
    }
    mx = mnew;
  }
  if (qi < m) {
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + 32 * t;
      if (d < hd)
        out[(static_cast<int64_t>(qi) * a.n_heads + h) * hd + d] = float_to_bf16_bits(acc[t] / l);
    }
  }
}

template <int G>
void launch_decode_g(const uint16_t* q, const uint16_t* kc, const uint16_t* vc, const int32_t* pos,
                     const AttentionArgs& a, float* partial, dim3 grid, cudaStream_t s) {
  const int dpl = (a.head_dim + 31) / 32;
  if (dpl == 1)
    attn_decode_split<G, 1><<<grid, kDecodeWarps * 32, 0, s>>>(q, kc, vc, pos, a, partial);
  else if (dpl == 2)
    attn_decode_split<G, 2><<<grid, kDecodeWarps * 32, 0, s>>>(q, kc, vc, pos, a, partial);
  else if (dpl <= 4)
    attn_decode_split<G, 4><<<grid, kDecodeWarps * 32, 0, s>>>(q, kc, vc, pos, a, partial);
  else if (dpl <= 8)
    attn_decode_split<G, 8><<<grid, kDecodeWarps * 32, 0, s>>>(q, kc, vc, pos, a, partial);
  else
    fail("attention_decode: head_dim > 256 not supported");
}

}  // namespace

size_t attention_decode_workspace(const AttentionArgs& a) {
  const int nsplit = (a.max_seq + kDecodeChunk - 1) / kDecodeChunk;
  return static_cast<size_t>(a.n_heads) * nsplit * (a.head_dim + 2);
}

void attention_decode(const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                      const int32_t* pos, const AttentionArgs& a, float* partial, uint16_t* out,
                      cudaStream_t s) {
  const int nsplit = (a.max_seq + kDecodeChunk - 1) / kDecodeChunk;
  const int G = a.n_heads / a.n_kv_heads;
  const dim3 grid(a.n_kv_heads, nsplit);
  switch (G) {
    case 1: launch_decode_g<1>(q, kc, vc, pos, a, partial, grid, s); break;
    case 2: launch_decode_g<2>(q, kc, vc, pos, a, partial, grid, s); break;
    case 4: launch_decode_g<4>(q, kc, vc, pos, a, partial, grid, s); break;
    case 8: launch_decode_g<8>(q, kc, vc, pos, a, partial, grid, s); break;
    default: fail("attention_decode: n_heads / n_kv_heads must be 1, 2, 4 or 8");
  }
  AO_CUDA_CHECK(cudaGetLastError());
  attn_decode_combine<<<a.n_heads, 128, 0, s>>>(partial, pos, nsplit, a.head_dim, out);
  AO_CUDA_CHECK(cudaGetLastError());
}

void attention_prefill(const uint16_t* q, int m, const uint16_t* kc, const uint16_t* vc,
                       const int32_t* pos, const AttentionArgs& a, uint16_t* out, cudaStream_t s) {
  const int hd = a.head_dim;
  if (hd % 2 != 0 || hd > 256) fail("attention_prefill: head_dim must be even and <= 256");
  const size_t smem = kPrefillRows * hd * 4 + kTile * (hd + 2) * 2 + kTile * hd * 2;
  const dim3 grid((m + kPrefillRows - 1) / kPrefillRows, a.n_heads);
  const int dpl = (hd + 31) / 32;
  if (dpl == 1)
    attn_prefill_kernel<1><<<grid, kPrefillRows * 32, smem, s>>>(q, m, kc, vc, pos, a, out);
  else if (dpl == 2)
    attn_prefill_kernel<2><<<grid, kPrefillRows * 32, smem, s>>>(q, m, kc, vc, pos, a, out);
  else if (dpl <= 4)
    attn_prefill_kernel<4><<<grid, kPrefillRows * 32, smem, s>>>(q, m, kc, vc, pos, a, out);
  else
    attn_prefill_kernel<8><<<grid, kPrefillRows * 32, smem, s>>>(q, m, kc, vc, pos, a, out);
  AO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ao::cuda

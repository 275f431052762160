// Attention over the KV cache (layout per layer [n_kv_heads, max_seq, head_dim] bf16).
// Decode: split-KV flash decoding: a block per (kv head, chunk of kDecodeChunk positions)
// serves all query heads of the group (GQA: each K/V row is read once), writes an unnormalized
// partial (max, sum, acc) per (head, chunk); the last block of each KV head to finish (an
// atomic counter) merges the chunks. The grid covers
// the cache capacity and blocks past the current position exit, so one CUDA graph serves every
// position (*pos lives in device memory).
// Prefill: a block per (8 query rows, head); K/V tiles of 32 keys in shared memory; one lane per
// key for the scores, one lane per output dimension for P V; online softmax, causal.
#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

constexpr int kDecodeChunk = 32;
constexpr int kDecodeWarps = 4;
constexpr int kMaxDecodeSplits = 1024;  // context up to 32768 positions

template <int G, int DPL>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attn_decode_split(const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                      const int32_t* pos, AttentionArgs a, float* partial, int* counters,
                      uint16_t* attn_out) {
  grid_dependents_launch();  // the o-proj GEMV may start streaming its weights
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
  // Each warp takes kPer consecutive positions; all their K/V loads are issued first.
  constexpr int kPer = kDecodeChunk / kDecodeWarps;
  const int p0 = start + warp * kPer;
  float kr[kPer][DPL], vr[kPer][DPL];
#pragma unroll
  for (int j = 0; j < kPer; ++j)
#pragma unroll
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + 32 * t, p = p0 + j;
      const bool ok = d < hd && p < end;
      kr[j][t] = ok ? bf16_bits_to_float(kbase[static_cast<int64_t>(p) * hd + d]) : 0.f;
      vr[j][t] = ok ? bf16_bits_to_float(vbase[static_cast<int64_t>(p) * hd + d]) : 0.f;
    }
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float s[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      float d = 0.f;
#pragma unroll
      for (int t = 0; t < DPL; ++t) d = fmaf(qr[g][t], kr[j][t], d);
      s[j] = p0 + j < end ? warp_sum(d) : -INFINITY;
      mx[g] = fmaxf(mx[g], s[j]);
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const float pw = p0 + j < end ? __expf(s[j] - mx[g]) : 0.f;
      l[g] += pw;
#pragma unroll
      for (int t = 0; t < DPL; ++t) acc[g][t] = fmaf(pw, vr[j][t], acc[g][t]);
    }
  }
  // Merge the warps through shared memory.
  __shared__ float sm[kDecodeWarps][G][2];
  // Shared buffer: first the warps' accumulators, later (last block) the chunk weights.
  constexpr int kAccFloats = kDecodeWarps * G * DPL * 32;
  constexpr int kShFloats = kAccFloats > G * kMaxDecodeSplits ? kAccFloats : G * kMaxDecodeSplits;
  __shared__ float shbuf[kShFloats];
  auto sacc = reinterpret_cast<float(*)[G][DPL * 32]>(shbuf);
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
  // The last block of this KV head to finish merges the chunks (threadfence reduction).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  const int used = (len + kDecodeChunk - 1) / kDecodeChunk;
  if (threadIdx.x == 0) last = atomicAdd(&counters[kvh], 1) == used - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // Per head: the max over chunks, each chunk's weight exp(m_c - max) and the total sum (one warp
  // per head), then every (head, dim) sums its weighted accumulators.
  auto wsm = reinterpret_cast<float(*)[kMaxDecodeSplits]>(shbuf);
  __shared__ float lsm[G];
  for (int g = warp; g < G; g += kDecodeWarps) {
    const float* ph = partial + static_cast<int64_t>(kvh * G + g) * nsplit * (hd + 2);
    float M = -INFINITY;
    for (int c = lane; c < used; c += 32) M = fmaxf(M, __ldcg(ph + c * (hd + 2)));
    M = warp_max(M);
    float L = 0.f;
    for (int c = lane; c < used; c += 32) {
      const float w = __expf(__ldcg(ph + c * (hd + 2)) - M);
      wsm[g][c] = w;
      L += w * __ldcg(ph + c * (hd + 2) + 1);
    }
    L = warp_sum(L);
    if (lane == 0) lsm[g] = L;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd, h = kvh * G + g;
    const float* ph = partial + static_cast<int64_t>(h) * nsplit * (hd + 2) + 2 + d;
    float A = 0.f;
#pragma unroll 4
    for (int c = 0; c < used; ++c) A = fmaf(wsm[g][c], __ldcg(ph + c * (hd + 2)), A);
    attn_out[h * hd + d] = float_to_bf16_bits(A / lsm[g]);
  }
  if (threadIdx.x == 0) counters[kvh] = 0;
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
                     const AttentionArgs& a, float* partial, int* counters, uint16_t* out,
                     dim3 grid, cudaStream_t s) {
  const int dpl = (a.head_dim + 31) / 32;
  const unsigned t = kDecodeWarps * 32;
  if (dpl == 1)
    attn_decode_split<G, 1><<<grid, t, 0, s>>>(q, kc, vc, pos, a, partial, counters, out);
  else if (dpl == 2)
    attn_decode_split<G, 2><<<grid, t, 0, s>>>(q, kc, vc, pos, a, partial, counters, out);
  else if (dpl <= 4)
    attn_decode_split<G, 4><<<grid, t, 0, s>>>(q, kc, vc, pos, a, partial, counters, out);
  else if (dpl <= 8)
    attn_decode_split<G, 8><<<grid, t, 0, s>>>(q, kc, vc, pos, a, partial, counters, out);
  else
    fail("attention_decode: head_dim > 256 not supported");
}

}  // namespace

size_t attention_decode_workspace(const AttentionArgs& a) {
  const int nsplit = (a.max_seq + kDecodeChunk - 1) / kDecodeChunk;
  return (static_cast<size_t>(a.n_heads) * nsplit * (a.head_dim + 2) + a.n_kv_heads) * 4;
}

void attention_decode(const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                      const int32_t* pos, const AttentionArgs& a, void* workspace, uint16_t* out,
                      cudaStream_t s) {
  const int nsplit = (a.max_seq + kDecodeChunk - 1) / kDecodeChunk;
  if (nsplit > kMaxDecodeSplits) fail("attention_decode: KV cache longer than 32768 positions");
  float* partial = static_cast<float*>(workspace);
  int* counters =
      reinterpret_cast<int*>(partial + static_cast<size_t>(a.n_heads) * nsplit * (a.head_dim + 2));
  const int G = a.n_heads / a.n_kv_heads;
  const dim3 grid(a.n_kv_heads, nsplit);
  switch (G) {
    case 1: launch_decode_g<1>(q, kc, vc, pos, a, partial, counters, out, grid, s); break;
    case 2: launch_decode_g<2>(q, kc, vc, pos, a, partial, counters, out, grid, s); break;
    case 4: launch_decode_g<4>(q, kc, vc, pos, a, partial, counters, out, grid, s); break;
    case 8: launch_decode_g<8>(q, kc, vc, pos, a, partial, counters, out, grid, s); break;
    default: fail("attention_decode: n_heads / n_kv_heads must be 1, 2, 4 or 8");
  }
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

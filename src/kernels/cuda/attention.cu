// Decode attention over the KV cache (layout per layer [n_kv_heads, max_seq, head_dim] bf16),
// one token at position *pos. Split-KV flash decoding: blocks per (kv head, split) serve all
// query heads of the group (GQA: each K/V row is read once) and write an unnormalized partial
// (max, sum, acc) per (head, split); the last block of each KV head to finish (an atomic
// counter) merges them. The grid is fixed and blocks past the current position exit, so one
// CUDA graph serves every position (*pos lives in device memory).
// v2 (head_dim 64/128/256): 8 warps, 16-byte loads, a chunk size that grows with the position.
// v1 (other head sizes): a block per 32 positions of the capacity.
// Prefill attention lives in attention_prefill.cu.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"
#include "trace.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

constexpr int kDecodeChunk = 32;
constexpr int kDecodeWarps = 4;
constexpr int kMaxDecodeSplits = 1024;  // context up to 32768 positions

template <int G, int DPL>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attn_decode_split(const uint16_t* q, const uint16_t* kc, const uint16_t* vc, const int32_t* pos,
                      AttentionArgs a, float* partial, int* counters, uint16_t* attn_out) {
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

// ---- decode v2 (head_dim 64 / 128 / 256, any group size up to 8) -------------------------
// A block of 8 warps per (KV head, its share of the query heads below, split); the grid has
// kSplits2 splits and each covers a chunk of 64 * ceil(len / (64 * kSplits2)) positions, so short
// contexts use few blocks (no launch of idle ones) and long ones spread over the GPU. Each warp takes 8 consecutive positions per
// step with 16-byte loads (a K/V row is HD / 8 lanes), keeps an online softmax per query head
// in the exp2 domain, and the warps merge through shared memory. One used split: the block
// writes the output itself; more: partials + the last block's merge, as in v1.
// The query heads of a KV head are split over HB = gridDim.x / n_kv_heads blocks
// (AttentionTuning::head_blocks), GB = G / HB each: every block loads the K/V rows itself (L2
// hits for all but the first of them, which run side by side), and a warp's serial math after
// the wait is 1 / HB as long.
constexpr int kSplits2 = 32;
constexpr int kDec2Warps = 8;

template <int GB, int HD>
__global__ void __launch_bounds__(kDec2Warps * 32)
    attn_decode_v2(const uint16_t* q, const uint16_t* kc, const uint16_t* vc, const int32_t* pos,
                   AttentionArgs a, float* partial, int* counters, uint16_t* attn_out,
                   int loads_before_wait, uint8_t* digits) {
  constexpr int LPR = HD / 8;    // lanes per K/V row
  constexpr int PPL = 32 / LPR;  // positions per warp-wide load
  constexpr int NL = 8 / PPL;    // loads per warp step (8 positions)
  constexpr int kStep = kDec2Warps * 8;
  trace_point(TraceKind::attention, kc, 0, HD, TracePoint::start);
  if (!loads_before_wait) grid_dependency_wait();  // AttentionTuning (the second wait is a no-op)
  const int hblocks = static_cast<int>(gridDim.x) / a.n_kv_heads;
  const int kvh = blockIdx.x / hblocks, split = blockIdx.y;
  const int head0 = kvh * (a.n_heads / a.n_kv_heads) + blockIdx.x % hblocks * GB;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / LPR, dl = lane % LPR;
  // Before the grid-dependency wait: the position and the K/V rows before it (the contract in
  // kernels.h: neither is written by the kernel this one waits for; the qkv GEMV writes q and
  // row *pos only). Each load under the next GEMV's weight stream takes ~1 us, so the wait's
  // release leaves one round of loads (q, the new row, a second step's rows) instead of three
  // (lab note 34).
  const int len = *pos + 1;
  // Up to kSingle positions one split does it all (no partials, no merge: at 65-128 positions
  // that beat 2 splits + merge, run 28); beyond, chunks of 64 positions up to 32 splits.
  constexpr int kSingle = 2 * kStep;
  const int chunk =
      len <= kSingle ? kSingle : kStep * ((len + kStep * kSplits2 - 1) / (kStep * kSplits2));
  const int used = (len + chunk - 1) / chunk;
  const int start = split * chunk;
  if (start >= len) return;
  const int end = min(len, start + chunk);

  float mx[GB], l[GB], acc[GB][8];
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    mx[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
  }
  const uint16_t* kbase = kc + static_cast<int64_t>(kvh) * a.max_seq * HD + dl * 8;
  const uint16_t* vbase = vc + static_cast<int64_t>(kvh) * a.max_seq * HD + dl * 8;
  // K/V rows of the warp's 8 positions from p0 before `until` (zeros from there).
  auto load_kv = [&](int p0, uint4(&kr)[NL], uint4(&vr)[NL], int until) {
#pragma unroll
    for (int i = 0; i < NL; ++i) {
      const int p = p0 + i * PPL + sub;
      if (p < until) {
        kr[i] = *reinterpret_cast<const uint4*>(kbase + static_cast<int64_t>(p) * HD);
        vr[i] = *reinterpret_cast<const uint4*>(vbase + static_cast<int64_t>(p) * HD);
      } else {
        kr[i] = vr[i] = make_uint4(0, 0, 0, 0);
      }
    }
  };
  // The rows (K or V: base) of the warp's 8 positions from p0 before `until` (zeros from there).
  auto load_rows = [&](const uint16_t* base, int p0, uint4(&r)[NL], int until) {
#pragma unroll
    for (int i = 0; i < NL; ++i) {
      const int p = p0 + i * PPL + sub;
      r[i] = p < until ? *reinterpret_cast<const uint4*>(base + static_cast<int64_t>(p) * HD)
                       : make_uint4(0, 0, 0, 0);
    }
  };
  // The first step's rows before the wait, all but the new one (row len - 1, from the qkv GEMV).
  uint4 kn[NL], vn[NL];
  load_kv(start + warp * 8, kn, vn, min(end, len - 1));
  grid_dependency_wait();    // q and the new K/V row come from the qkv GEMV
  grid_dependents_launch();  // the o-proj GEMV may start streaming its weights
  trace_point(TraceKind::attention, kc, len, HD, TracePoint::wait_done);
  uint4 qraw[GB];
#pragma unroll
  for (int g = 0; g < GB; ++g)
    qraw[g] = *reinterpret_cast<const uint4*>(q + (head0 + g) * HD + dl * 8);
#pragma unroll
  for (int i = 0; i < NL; ++i)
    if (start + warp * 8 + i * PPL + sub == len - 1) {
      kn[i] = *reinterpret_cast<const uint4*>(kbase + static_cast<int64_t>(len - 1) * HD);
      vn[i] = *reinterpret_cast<const uint4*>(vbase + static_cast<int64_t>(len - 1) * HD);
    }
  float qv[GB][8];
  const float sl2 = a.scale * 1.4426950408889634f;
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    const uint32_t w4[4] = {qraw[g].x, qraw[g].y, qraw[g].z, qraw[g].w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      qv[g][2 * e] = __uint_as_float(w4[e] << 16) * sl2;
      qv[g][2 * e + 1] = __uint_as_float(w4[e] & 0xffff0000u) * sl2;
    }
  }
  // The next step's rows are loaded during this step's math (a single split's 128 positions take
  // one round of loads after the wait): its K rows once this step's scores are taken, its V rows
  // once this step's V rows are used, so only one step's rows are held at a time.
  for (int p0 = start + warp * 8; p0 < end; p0 += kStep) {
    const bool more = p0 + kStep < end;
    float s[GB][NL];
#pragma unroll
    for (int i = 0; i < NL; ++i) {
      const uint32_t w4[4] = {kn[i].x, kn[i].y, kn[i].z, kn[i].w};
      float kf[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        kf[2 * e] = __uint_as_float(w4[e] << 16);
        kf[2 * e + 1] = __uint_as_float(w4[e] & 0xffff0000u);
      }
#pragma unroll
      for (int g = 0; g < GB; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(qv[g][e], kf[e], d);
        s[g][i] = d;
      }
    }
    if (more) load_rows(kbase, p0 + kStep, kn, end);
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      float mnew = mx[g];
#pragma unroll
      for (int i = 0; i < NL; ++i) {
        float d = s[g][i];
#pragma unroll
        for (int o = LPR / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[g][i] = p0 + i * PPL + sub < end ? d : -INFINITY;
        mnew = fmaxf(mnew, s[g][i]);
      }
      if (mnew == -INFINITY) continue;  // no valid position for this lane's row group yet
      const float corr = exp2f(mx[g] - mnew);
      mx[g] = mnew;
      l[g] *= corr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= corr;
#pragma unroll
      for (int i = 0; i < NL; ++i) {
        const float pw = exp2f(s[g][i] - mnew);  // exp2(-inf) = 0 for masked positions
        l[g] += pw;
        const uint32_t w4[4] = {vn[i].x, vn[i].y, vn[i].z, vn[i].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          acc[g][2 * e] = fmaf(pw, __uint_as_float(w4[e] << 16), acc[g][2 * e]);
          acc[g][2 * e + 1] = fmaf(pw, __uint_as_float(w4[e] & 0xffff0000u), acc[g][2 * e + 1]);
        }
      }
    }
    if (more) load_rows(vbase, p0 + kStep, vn, end);
  }
  // Merge the row groups of the warp (lanes dl, dl + LPR, ...).
#pragma unroll
  for (int o = LPR; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, mx[g], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], o);
      const float mn = fmaxf(mx[g], mo);
      const float ca = mn == -INFINITY ? 0.f : exp2f(mx[g] - mn);
      const float cb = mn == -INFINITY ? 0.f : exp2f(mo - mn);
      l[g] = l[g] * ca + lo * cb;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        acc[g][e] = acc[g][e] * ca + __shfl_xor_sync(0xffffffffu, acc[g][e], o) * cb;
      mx[g] = mn;
    }
  // Merge the warps through shared memory.
  __shared__ float sml[kDec2Warps][GB][2];
  __shared__ __align__(16) float sacc[kDec2Warps][GB][HD];
  // With `digits` (GemvInput::int4_digits for the o projection, docs/CUDA.md lab note 86): the
  // block's outputs (bf16 bits) are also kept here, then staged as the int4 batch-1 GEMV's
  // digits, one power-of-two scale per 128-k segment (a segment is part of one block's heads:
  // HD is 128 or 256), with the segment's {1 / S, sum of X / S}.
  __shared__ __align__(16) uint16_t ob[GB * HD];
  auto write_digits = [&] {
    __syncthreads();
    if constexpr (HD % 128 != 0) return;  // attention_decode_writes_int4_digits is false there
    constexpr int kSegs = GB * HD / 128;
    const int seg0 = head0 * HD / 128, K = a.n_heads * HD;
    for (int sg = warp; sg < kSegs; sg += kDec2Warps) {
      const bool on = lane < 16;  // lanes 0-15 take 8 consecutive values each
      const uint4 raw =
          on ? *reinterpret_cast<const uint4*>(&ob[sg * 128 + lane * 8]) : make_uint4(0, 0, 0, 0);
      const uint32_t w4[4] = {raw.x, raw.y, raw.z, raw.w};
      float v[8];
      float mx = 0.f;
      bool nonfinite = false;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = __uint_as_float(e & 1 ? w4[e / 2] & 0xffff0000u : w4[e / 2] << 16);
        mx = fmaxf(mx, fabsf(v[e]));
        nonfinite |= !(fabsf(v[e]) < INFINITY);
      }
      mx = warp_max(mx);
      const bool bad = __any_sync(0xffffffffu, nonfinite);
      // One factor, at most 2^126: a segment below 2^-104 keeps fewer than 22 bits.
      const float s1 = imma_row_scale(mx).x;
      uint32_t z[8];
      int su = imma_digit_bytes8(v, s1, 1.f, z);
#pragma unroll
      for (int o = 1; o < 16; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
      if (on) {
        uint32_t dg[3][2];
        imma_pack_digits(z, dg);
        const int j = (seg0 + sg) * 128 + lane * 8;
        uint2* out = reinterpret_cast<uint2*>(digits);
#pragma unroll
        for (int n = 0; n < 3; ++n) out[imma_digit_index(j, n)] = make_uint2(dg[n][0], dg[n][1]);
        if (lane == 0) {
          const float xi = bad ? __int_as_float(0x7fc00000) : 1.f / s1;
          reinterpret_cast<float2*>(digits + static_cast<size_t>(K) * 3)[seg0 + sg] =
              make_float2(xi, static_cast<float>(su) * xi);
        }
      }
    }
  };
  if (sub == 0) {
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      if (dl == 0) {
        sml[warp][g][0] = mx[g];
        sml[warp][g][1] = l[g];
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) sacc[warp][g][dl * 8 + e] = acc[g][e];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GB * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDec2Warps; ++w) M = fmaxf(M, sml[w][g][0]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < kDec2Warps; ++w) {
      if (sml[w][g][0] == -INFINITY) continue;
      const float c = exp2f(sml[w][g][0] - M);
      L += sml[w][g][1] * c;
      A += sacc[w][g][d] * c;
    }
    const int h = head0 + g;
    if (used == 1) {
      const uint16_t o = float_to_bf16_bits(A / L);
      attn_out[h * HD + d] = o;
      if (digits) ob[i] = o;
    } else {
      float* out = partial + (static_cast<int64_t>(h) * kSplits2 + split) * (HD + 2);
      out[2 + d] = A;
      if (d == 0) {
        out[0] = M;
        out[1] = L;
      }
    }
  }
  if (used == 1) {
    if (digits) write_digits();
    trace_point(TraceKind::attention, kc, len, HD, TracePoint::end);
    return;
  }
  // The last block of these heads to finish merges the splits (threadfence reduction).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == used - 1;
  __syncthreads();
  if (!last) {
    trace_point(TraceKind::attention, kc, len, HD, TracePoint::end);
    return;
  }
  __threadfence();
  __shared__ float wsm[GB][kSplits2];
  __shared__ float lsm[GB];
  for (int g = warp; g < GB; g += kDec2Warps) {
    const float* ph = partial + static_cast<int64_t>(head0 + g) * kSplits2 * (HD + 2);
    const float mc = lane < used ? __ldcg(ph + lane * (HD + 2)) : -INFINITY;
    const float M = warp_max(mc);
    const float w = lane < used ? exp2f(mc - M) : 0.f;
    if (lane < kSplits2) wsm[g][lane] = w;
    const float L = warp_sum(lane < used ? w * __ldcg(ph + lane * (HD + 2) + 1) : 0.f);
    if (lane == 0) lsm[g] = L;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GB * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD, h = head0 + g;
    const float* ph = partial + static_cast<int64_t>(h) * kSplits2 * (HD + 2) + 2 + d;
    float A = 0.f;
    for (int c = 0; c < used; ++c) A = fmaf(wsm[g][c], __ldcg(ph + c * (HD + 2)), A);
    const uint16_t o = float_to_bf16_bits(A / lsm[g]);
    attn_out[h * HD + d] = o;
    if (digits) ob[i] = o;
  }
  if (digits) write_digits();
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;
  trace_point(TraceKind::attention, kc, len, HD, TracePoint::end);
}
static_assert(kSplits2 <= 32, "the v2 merge keeps one split per lane");

// GB query heads per block, hb = G / GB blocks per KV head.
template <int GB, int HD>
void launch_decode_v2_split(int hb, const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                            const int32_t* pos, const AttentionArgs& a, float* partial,
                            int* counters, uint16_t* out, uint8_t* digits, cudaStream_t s) {
  launch_pdl(attn_decode_v2<GB, HD>, dim3(static_cast<unsigned>(a.n_kv_heads * hb), kSplits2),
             dim3(kDec2Warps * 32), 0, s, q, kc, vc, pos, a, partial, counters, out,
             attention_tuning().loads_before_wait ? 1 : 0, digits);
}

// AttentionTuning::head_blocks: the largest of 4, 2, 1 that divides G and is at most it.
template <int G, int HD>
void launch_decode_v2(const uint16_t* q, const uint16_t* kc, const uint16_t* vc, const int32_t* pos,
                      const AttentionArgs& a, float* partial, int* counters, uint16_t* out,
                      uint8_t* digits, cudaStream_t s) {
  const int hb = attention_tuning().head_blocks;
  if constexpr (G % 4 == 0) {
    if (hb >= 4)
      return launch_decode_v2_split<G / 4, HD>(4, q, kc, vc, pos, a, partial, counters, out,
                                               digits, s);
  }
  if constexpr (G % 2 == 0) {
    if (hb >= 2)
      return launch_decode_v2_split<G / 2, HD>(2, q, kc, vc, pos, a, partial, counters, out,
                                               digits, s);
  }
  launch_decode_v2_split<G, HD>(1, q, kc, vc, pos, a, partial, counters, out, digits, s);
}

template <int HD>
bool dispatch_decode_v2(int G, const uint16_t* q, const uint16_t* kc, const uint16_t* vc,
                        const int32_t* pos, const AttentionArgs& a, float* partial, int* counters,
                        uint16_t* out, uint8_t* digits, cudaStream_t s) {
  switch (G) {
#define AO_DECODE_G(g)                                                               \
  case g:                                                                            \
    if constexpr (g * HD <= 1024) {                                                  \
      launch_decode_v2<g, HD>(q, kc, vc, pos, a, partial, counters, out, digits, s); \
      return true;                                                                   \
    }                                                                                \
    return false;
    AO_DECODE_G(1)
    AO_DECODE_G(2)
    AO_DECODE_G(3)
    AO_DECODE_G(4)
    AO_DECODE_G(5)
    AO_DECODE_G(6)
    AO_DECODE_G(7)
    AO_DECODE_G(8)
#undef AO_DECODE_G
    default:
      return false;
  }
}

// AO_ATTN_DECODE=v1 forces the v1 kernel (for comparisons).
bool decode_v2_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("AO_ATTN_DECODE");
    return !(e && std::string(e) == "v1");
  }();
  return on;
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

// The workspace: partials [n_heads][splits][head_dim + 2] floats for the splits it is laid out
// for (v1's count, one per 32 positions of the capacity, or v2's fixed count, whichever is
// larger), then the merge counters, one per block of a split: n_heads of them at most (v2 splits
// a KV head's query heads over AttentionTuning::head_blocks blocks).
AttentionTuning g_attention_tuning;

int workspace_splits(const AttentionArgs& a) {
  return std::max((a.max_seq + kDecodeChunk - 1) / kDecodeChunk, kSplits2);
}
}  // namespace

void set_attention_tuning(const AttentionTuning& t) { g_attention_tuning = t; }
AttentionTuning attention_tuning() { return g_attention_tuning; }

size_t attention_decode_workspace(const AttentionArgs& a) {
  return (static_cast<size_t>(a.n_heads) * workspace_splits(a) * (a.head_dim + 2) + a.n_heads) * 4;
}

bool attention_decode_writes_int4_digits(const AttentionArgs& a) {
  if (!decode_v2_enabled() || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0) return false;
  const int G = a.n_heads / a.n_kv_heads;
  return (a.head_dim == 128 || a.head_dim == 256) && G >= 1 && G <= 8 && G * a.head_dim <= 1024;
}

void attention_decode(const uint16_t* q, const uint16_t* kc, const uint16_t* vc, const int32_t* pos,
                      const AttentionArgs& a, void* workspace, uint16_t* out, cudaStream_t s,
                      uint8_t* int4_digits) {
  if (int4_digits != nullptr) {
    if (!attention_decode_writes_int4_digits(a))
      fail(("attention_decode: int4 digits need the v2 kernel with head_dim 128 or 256 (got " +
            std::to_string(a.head_dim) + ")")
               .c_str());
    if (reinterpret_cast<uintptr_t>(int4_digits) % 16 != 0)
      fail("attention_decode: the int4 digits buffer must be 16-byte aligned");
  }
  const int nsplit = (a.max_seq + kDecodeChunk - 1) / kDecodeChunk;
  if (nsplit > kMaxDecodeSplits) fail("attention_decode: KV cache longer than 32768 positions");
  float* partial = static_cast<float*>(workspace);
  int* counters = reinterpret_cast<int*>(partial + static_cast<size_t>(a.n_heads) *
                                                       workspace_splits(a) * (a.head_dim + 2));
  const int G = a.n_heads / a.n_kv_heads;
  if (decode_v2_enabled() && a.n_heads % a.n_kv_heads == 0) {
    bool done = false;
    if (a.head_dim == 128)
      done = dispatch_decode_v2<128>(G, q, kc, vc, pos, a, partial, counters, out, int4_digits, s);
    else if (a.head_dim == 64)
      done = dispatch_decode_v2<64>(G, q, kc, vc, pos, a, partial, counters, out, nullptr, s);
    else if (a.head_dim == 256)
      done = dispatch_decode_v2<256>(G, q, kc, vc, pos, a, partial, counters, out, int4_digits, s);
    if (done) return;
  }
  const dim3 grid(a.n_kv_heads, nsplit);
  switch (G) {
    case 1:
      launch_decode_g<1>(q, kc, vc, pos, a, partial, counters, out, grid, s);
      break;
    case 2:
      launch_decode_g<2>(q, kc, vc, pos, a, partial, counters, out, grid, s);
      break;
    case 4:
      launch_decode_g<4>(q, kc, vc, pos, a, partial, counters, out, grid, s);
      break;
    case 8:
      launch_decode_g<8>(q, kc, vc, pos, a, partial, counters, out, grid, s);
      break;
    default:
      fail("attention_decode: n_heads / n_kv_heads must be 1, 2, 4 or 8");
  }
  AO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ao::cuda

AO_KERNEL_TRACE_TU(attention)

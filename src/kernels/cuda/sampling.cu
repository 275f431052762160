// Sampling on the device (no logits go back to the host): greedy argmax, or temperature with
// optional top-k and top-p. Top-k and top-p become a logit threshold found by bisection
// (count >= k, then kept probability mass >= p); the token is drawn among the logits above the
// threshold with the Gumbel-max trick, noise from a counter-based hash of (seed, step, index).
#include <algorithm>

#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"
#include "trace.cuh"

namespace ao::cuda {

using namespace detail;

namespace {

constexpr int kSampleThreads = 1024;
// Greedy sampling spreads the logits over up to this many blocks (one load of 16 bytes per
// thread at a 128K vocabulary); the last block to finish reads the best key. One block read the
// 513 KB of a 128K vocabulary alone in ~10 us (bench_cuda_decode --kernels, H200).
constexpr int kGreedyBlocks = 32;

struct ArgMax {
  float v;
  int i;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}
__device__ ArgMax block_argmax(ArgMax x) {
  __shared__ float sv[32];
  __shared__ int si[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax y{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)};
    x = better(x, y);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sv[warp] = x.v;
    si[warp] = x.i;
  }
  __syncthreads();
  ArgMax r{-INFINITY, 0x7fffffff};
  if (lane < (blockDim.x >> 5)) r = ArgMax{sv[lane], si[lane]};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax y{__shfl_xor_sync(0xffffffffu, r.v, o), __shfl_xor_sync(0xffffffffu, r.i, o)};
    r = better(r, y);
  }
  return r;
}

// A 64-bit key whose unsigned order is better()'s: the logit's bits made monotonic (-0 taken as
// +0, which better() finds equal), then the complement of the index (the smaller index wins a
// tie). NaN has no key (better() never picks one).
__device__ __forceinline__ unsigned long long argmax_key(ArgMax a) {
  const float v = a.v == 0.f ? 0.f : a.v;
  uint32_t b = __float_as_uint(v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return static_cast<unsigned long long>(b) << 32 | (0xffffffffu - static_cast<uint32_t>(a.i));
}

// Greedy: block b takes its share of the logits (float4 units where vocab % 4 == 0); each block
// folds its best into st->best_key by atomicMax (the order of the blocks cannot change the
// result: the key's maximum is better()'s), and the last block to finish takes the token and
// leaves the scratch at zero. Otherwise block 0 alone runs top-k / top-p and the draw.
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const float* logits, int vocab, SamplerState* st, int32_t* token,
                  int32_t* out_tokens, int out_cap, int32_t* n_out, int32_t* pos, int advance) {
  grid_dependency_wait();  // the logits come from the lm_head GEMV
  trace_point(TraceKind::sample, logits, vocab, 0, TracePoint::start);
  __shared__ float red[32];
  const float T = st->temperature;
  ArgMax best{-INFINITY, 0x7fffffff};
  if (T <= 0.f) {
    const bool v4 = (vocab & 3) == 0;
    const int units = v4 ? vocab / 4 : vocab;
    const int per = (units + gridDim.x - 1) / gridDim.x;
    const int u0 = blockIdx.x * per, u1 = min(units, u0 + per);
    if (v4) {
      const float4* l4 = reinterpret_cast<const float4*>(logits);
#pragma unroll 4
      for (int i = u0 + threadIdx.x; i < u1; i += blockDim.x) {
        const float4 v = l4[i];
        best = better(best, ArgMax{v.x, 4 * i});
        best = better(best, ArgMax{v.y, 4 * i + 1});
        best = better(best, ArgMax{v.z, 4 * i + 2});
        best = better(best, ArgMax{v.w, 4 * i + 3});
      }
    } else {
      for (int i = u0 + threadIdx.x; i < u1; i += blockDim.x)
        best = better(best, ArgMax{logits[i], i});
    }
    best = block_argmax(best);
    if (gridDim.x > 1) {
      if (threadIdx.x != 0) return;
      if (best.i != 0x7fffffff) atomicMax(&st->best_key, argmax_key(best));
      __threadfence();
      if (atomicAdd(&st->blocks_done, 1u) != gridDim.x - 1) return;
      const unsigned long long k = atomicExch(&st->best_key, 0ull);
      st->blocks_done = 0;
      best.i = k ? static_cast<int>(0xffffffffu - static_cast<uint32_t>(k)) : 0x7fffffff;
    }
  } else {
    if (blockIdx.x != 0) return;
    float mx = -INFINITY, mn = INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      mx = fmaxf(mx, logits[i]);
      mn = fminf(mn, logits[i]);
    }
    mx = block_max(mx, red);
    mn = -block_max(-mn, red);
    float thr = mn;
    const int k = st->top_k;
    if (k > 0 && k < vocab) {
      float lo = mn, hi = mx;
      for (int it = 0; it < 40; ++it) {
        const float mid = 0.5f * (lo + hi);
        float c = 0.f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) c += logits[i] >= mid ? 1.f : 0.f;
        c = block_sum(c, red);
        if (c >= k)
          lo = mid;
        else
          hi = mid;
      }
      thr = lo;
    }
    const float p = st->top_p;
    if (p < 1.f) {
      float z = 0.f;
      for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        if (logits[i] >= thr) z += __expf((logits[i] - mx) / T);
      z = block_sum(z, red);
      float lo = thr, hi = mx;
      for (int it = 0; it < 40; ++it) {
        const float mid = 0.5f * (lo + hi);
        float c = 0.f;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
          if (logits[i] >= mid) c += __expf((logits[i] - mx) / T);
        c = block_sum(c, red);
        if (c >= p * z)
          lo = mid;
        else
          hi = mid;
      }
      thr = lo;
    }
    const uint64_t base = st->seed ^ (st->step * 0x9E3779B97F4A7C15ull);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      if (logits[i] < thr) continue;
      const float u = fmaxf(uniform01(base, i), 1e-7f);
      best = better(best, ArgMax{(logits[i] - mx) / T - __logf(-__logf(u)), i});
    }
    best = block_argmax(best);
  }
  if (threadIdx.x == 0) {
    *token = best.i;
    if (out_tokens) out_tokens[(*n_out)++ % out_cap] = best.i;
    if (advance) ++*pos;
    ++st->step;
  }
  trace_point(TraceKind::sample, logits, vocab, 0, TracePoint::end);
}

}  // namespace

void sample(const float* logits, int vocab, SamplerState* state, int32_t* token,
            int32_t* out_tokens, int out_capacity, int32_t* n_out, int32_t* pos, int advance_pos,
            cudaStream_t s) {
  // Greedy or not is read on the device (the state may change between graph replays), so the
  // grid is sized for greedy: one 16-byte load per thread up to kGreedyBlocks blocks.
  const int units = vocab % 4 == 0 ? vocab / 4 : vocab;
  const int blocks = std::clamp((units + kSampleThreads - 1) / kSampleThreads, 1, kGreedyBlocks);
  launch_pdl(sample_kernel, dim3(blocks), dim3(kSampleThreads), 0, s, logits, vocab, state, token,
             out_tokens, out_capacity, n_out, pos, advance_pos);
}

}  // namespace ao::cuda

AO_KERNEL_TRACE_TU(sampling)

// Prefill attention over the KV cache (layout per layer [n_kv_heads, max_seq, head_dim] bf16):
// M query tokens at positions *pos .. *pos + M - 1, causal, GQA.
//
// head_dim 64 / 128: a FlashAttention-2 style kernel on tensor cores (mma.sync m16n8k16 bf16,
// fp32 accumulation). A block owns 64 query rows of one head (4 warps x 16 rows); K/V tiles of
// 64 keys stream through a double-buffered cp.async ring in XOR-swizzled shared memory (ldmatrix
// without bank conflicts; V through ldmatrix.trans). Scores stay in registers: the S = Q K^T
// accumulator fragments are re-packed as the bf16 A operand of O += P V (no shared-memory round
// trip), with the online softmax in the exp2 domain. Warps skip key tiles entirely above their
// causal diagonal; blocks run longest-first.
// Other head sizes: a CUDA-core kernel (one warp per query row, 32-key tiles).
#include "ao/kernels/cuda/kernels.h"
#include "common.cuh"

#include <cstdlib>
#include <string>

namespace ao::cuda {

using namespace detail;

namespace {

// ---- tensor-core kernel ------------------------------------------------------------------
constexpr int kBM = 64;  // query rows per block (16 per warp)
constexpr int kBN = 64;  // keys per tile
constexpr int kMmaWarps = 4;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; zero-fills the destination when !pred.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// d += a b (16x8x16, bf16 inputs, fp32 accumulators).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
// Element offset of (row, col) in a [rows][HD] bf16 tile whose 16-byte chunks are XOR-swizzled
// by row % 8 (col a multiple of 8 for chunk addresses).
template <int HD>
__device__ __forceinline__ int swz(int row, int col) {
  return row * HD + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

template <int HD>
__global__ void __launch_bounds__(kMmaWarps * 32)
    attn_prefill_mma(const uint16_t* q, int m, const uint16_t* kc, const uint16_t* vc,
                     const int32_t* pos, AttentionArgs a, uint16_t* out) {
  static_assert(HD % 16 == 0 && HD <= 128, "head_dim");
  constexpr int CPR = HD / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) uint16_t fsm[];
  uint16_t* Qs = fsm;                // [kBM][HD]
  uint16_t* Ks = Qs + kBM * HD;      // [2][kBN][HD]
  uint16_t* Vs = Ks + 2 * kBN * HD;  // [2][kBN][HD]

  const int G = a.n_heads / a.n_kv_heads;
  const int h = blockIdx.y, kvh = h / G;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBM;  // longest (causal) blocks first
  const int p0 = *pos;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rows_here = min(kBM, m - q0);
  const int kend = p0 + q0 + rows_here;  // keys [0, kend)
  const int ntiles = (kend + kBN - 1) / kBN;
  const uint16_t* kbase = kc + static_cast<int64_t>(kvh) * a.max_seq * HD;
  const uint16_t* vbase = vc + static_cast<int64_t>(kvh) * a.max_seq * HD;

  for (int i = tid; i < kBM * CPR; i += kMmaWarps * 32) {
    const int r = i / CPR, c = i % CPR;
    const bool ok = r < rows_here;
    cp_async16(smem_addr(Qs + swz<HD>(r, c * 8)),
               q + (static_cast<int64_t>(q0 + (ok ? r : 0)) * a.n_heads + h) * HD + c * 8, ok);
  }
  auto load_kv = [&](int tile, int stage) {
    const int j0 = tile * kBN;
    uint16_t* kd = Ks + stage * kBN * HD;
    uint16_t* vd = Vs + stage * kBN * HD;
    for (int i = tid; i < kBN * CPR; i += kMmaWarps * 32) {
      const int r = i / CPR, c = i % CPR;
      const bool ok = j0 + r < kend;
      const int64_t off = static_cast<int64_t>(ok ? j0 + r : 0) * HD + c * 8;
      cp_async16(smem_addr(kd + swz<HD>(r, c * 8)), kbase + off, ok);
      cp_async16(smem_addr(vd + swz<HD>(r, c * 8)), vbase + off, ok);
    }
  };
  load_kv(0, 0);
  cp_async_commit();

  const float sl2 = a.scale * 1.4426950408889634f;  // scores in the exp2 domain
  const int g = lane >> 2, t4 = lane & 3;
  const int qpos0 = p0 + q0 + warp * 16 + g, qpos1 = qpos0 + 8;  // this thread's two rows
  const int warp_first = p0 + q0 + warp * 16, warp_last = warp_first + 15;
  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float mrow0 = -INFINITY, mrow1 = -INFINITY, lrow0 = 0.f, lrow1 = 0.f;
  uint32_t qf[HD / 16][4];

  for (int t = 0; t < ntiles; ++t) {
    if (t + 1 < ntiles) load_kv(t + 1, (t + 1) & 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const int r = warp * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
        ldmatrix_x4(qf[kk], smem_addr(Qs + swz<HD>(r, kk * 16 + ((lane >> 4) << 3))));
      }
    }
    const int j0 = t * kBN;
    if (j0 <= warp_last) {  // else every key of the tile is above this warp's diagonal
      const uint16_t* Kt = Ks + (t & 1) * kBN * HD;
      const uint16_t* Vt = Vs + (t & 1) * kBN * HD;
      float s[kBN / 8][4];
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
        for (int nn = 0; nn < kBN / 16; ++nn) {
          uint32_t b[4];
          const int key = nn * 16 + (lane & 7) + ((lane >> 4) << 3);
          ldmatrix_x4(b, smem_addr(Kt + swz<HD>(key, kk * 16 + (((lane >> 3) & 1) << 3))));
          mma_bf16(s[2 * nn], qf[kk], b[0], b[1]);
          mma_bf16(s[2 * nn + 1], qf[kk], b[2], b[3]);
        }
      const bool mask = j0 + kBN - 1 > warp_first;
      float mx0 = mrow0, mx1 = mrow1;
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) {
        const int key = j0 + n * 8 + 2 * t4;
        s[n][0] = (mask && key > qpos0) ? -INFINITY : s[n][0] * sl2;
        s[n][1] = (mask && key + 1 > qpos0) ? -INFINITY : s[n][1] * sl2;
        s[n][2] = (mask && key > qpos1) ? -INFINITY : s[n][2] * sl2;
        s[n][3] = (mask && key + 1 > qpos1) ? -INFINITY : s[n][3] * sl2;
        mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
        mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      // Key 0 is visible to every row, so after tile 0 the maxima are finite.
      const float c0 = exp2f(mrow0 - mx0), c1 = exp2f(mrow1 - mx1);
      mrow0 = mx0, mrow1 = mx1;
      lrow0 *= c0, lrow1 *= c1;
#pragma unroll
      for (int d = 0; d < HD / 8; ++d) {
        o[d][0] *= c0, o[d][1] *= c0;
        o[d][2] *= c1, o[d][3] *= c1;
      }
      // P (bf16) as the A operand: k-chunk kk covers key tiles 2kk (a0, a1) and 2kk+1 (a2, a3).
      uint32_t pf[kBN / 16][4];
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) {
        const __nv_bfloat162 r0 =
            __floats2bfloat162_rn(exp2f(s[n][0] - mx0), exp2f(s[n][1] - mx0));
        const __nv_bfloat162 r1 =
            __floats2bfloat162_rn(exp2f(s[n][2] - mx1), exp2f(s[n][3] - mx1));
        const float2 f0 = __bfloat1622float2(r0), f1 = __bfloat1622float2(r1);
        lrow0 += f0.x + f0.y;  // normalize by the weights actually used
        lrow1 += f1.x + f1.y;
        pf[n >> 1][(n & 1) * 2] = *reinterpret_cast<const uint32_t*>(&r0);
        pf[n >> 1][(n & 1) * 2 + 1] = *reinterpret_cast<const uint32_t*>(&r1);
      }
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
#pragma unroll
        for (int dd = 0; dd < HD / 16; ++dd) {
          uint32_t b[4];
          const int key = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
          ldmatrix_x4_trans(b, smem_addr(Vt + swz<HD>(key, dd * 16 + ((lane >> 4) << 3))));
          mma_bf16(o[2 * dd], pf[kk], b[0], b[1]);
          mma_bf16(o[2 * dd + 1], pf[kk], b[2], b[3]);
        }
    }
    __syncthreads();  // the next iteration's load overwrites this stage
  }

  lrow0 += __shfl_xor_sync(0xffffffffu, lrow0, 1);
  lrow0 += __shfl_xor_sync(0xffffffffu, lrow0, 2);
  lrow1 += __shfl_xor_sync(0xffffffffu, lrow1, 1);
  lrow1 += __shfl_xor_sync(0xffffffffu, lrow1, 2);
  const float inv0 = 1.f / lrow0, inv1 = 1.f / lrow1;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    const int col = d * 8 + 2 * t4;
    if (r0 < m)
      *reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(r0) * a.n_heads + h) * HD + col) =
          pack_bf16x2(o[d][0] * inv0, o[d][1] * inv0);
    if (r1 < m)
      *reinterpret_cast<uint32_t*>(out + (static_cast<int64_t>(r1) * a.n_heads + h) * HD + col) =
          pack_bf16x2(o[d][2] * inv1, o[d][3] * inv1);
  }
}

template <int HD>
void launch_prefill_mma(const uint16_t* q, int m, const uint16_t* kc, const uint16_t* vc,
                        const int32_t* pos, const AttentionArgs& a, uint16_t* out,
                        cudaStream_t s) {
  constexpr size_t smem = (kBM + 4 * kBN) * HD * sizeof(uint16_t);
  static bool configured = false;
  if (!configured) {
    opt_in_shared_memory(attn_prefill_mma<HD>, static_cast<int>(smem));
    configured = true;
  }
  const dim3 grid((m + kBM - 1) / kBM, a.n_heads);
  attn_prefill_mma<HD><<<grid, kMmaWarps * 32, smem, s>>>(q, m, kc, vc, pos, a, out);
}

// ---- CUDA-core kernel (any even head_dim <= 256) -----------------------------------------
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
  float* qs = psm;                 // [rows][hd]
  uint16_t* ks = reinterpret_cast<uint16_t*>(qs + kPrefillRows * hd);  // [kTile][hd + 2]
  uint16_t* vs = ks + kTile * kstride;                                 // [kTile][hd]

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


// AO_ATTN_PREFILL=simt forces the CUDA-core kernel (for comparisons).
bool prefill_mma_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("AO_ATTN_PREFILL");
    return !(e && std::string(e) == "simt");
  }();
  return on;
}
}  // namespace

void attention_prefill(const uint16_t* q, int m, const uint16_t* kc, const uint16_t* vc,
                       const int32_t* pos, const AttentionArgs& a, uint16_t* out, cudaStream_t s) {
  const int hd = a.head_dim;
  if (hd % 2 != 0 || hd > 256) fail("attention_prefill: head_dim must be even and <= 256");
  if (prefill_mma_enabled() && (hd == 64 || hd == 128)) {
    if (hd == 128)
      launch_prefill_mma<128>(q, m, kc, vc, pos, a, out, s);
    else
      launch_prefill_mma<64>(q, m, kc, vc, pos, a, out, s);
    AO_CUDA_CHECK(cudaGetLastError());
    return;
  }
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

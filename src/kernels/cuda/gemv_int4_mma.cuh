// int4 GEMV on the tensor cores (v7), included by gemv_impl.cuh inside its anonymous namespace.
//
// Same weight layout as the CUDA-core kernel (row-major nibbles, element k of a row at bits
// 4 (k % 8) of word k / 8; one scale word {bf16 s, zero} per (row, group)), so no repacking.
// A warp computes a 16-row x 128-k block with 8 mma.m16n8k16 (bf16 in, fp32 accumulate):
// lane (g = lane / 4, t = lane % 4) loads the 16-byte chunk t (k 32t .. 32t + 31) of rows g and
// g + 8. A word's nibble pairs (j, j + 4) become bf16x2 (128 + q) with one shift and one LOP3
// ((w >> 4j) & 0x000f000f | 0x43004300), exact. The k order inside the mma is a permutation of
// the physical k, which x (the B operand, column n = batch row m) follows: the prologue stores x
// as bf16 in exactly that fragment order (one 16-byte shared load per word and lane), plus the
// per-128 sums of x. Per 128-block and row: y += s (D - 128 Sx) + (zero - 8 s) Sx.
// A block of 8 warps owns 16 rows; the warps split K (128-blocks warp, warp + 8, ...; Kp is a
// multiple of 1024 so every warp gets the same count) and reduce through shared memory. The grid
// is persistent; each warp streams its weights through a ring of U register slots that runs on
// across tiles (the first U loads are issued before the grid-dependency wait).
// Needs group_size 128 or 256 and M x Kp x 2 bytes of x in shared memory (<= 96 KB in all).
// Groups of 64 and 32 (GPB = 2 or 4 groups per 128-block; batch 1): a lane's chunk t lies in
// group t / (4 / GPB) of its 128-block, so the block's mmas run once per group with the B
// fragments (x) of the other groups' lanes zeroed (2x / 4x the mmas, the same weight loads), and
// the prologue keeps x's sums per group (docs/CUDA.md lab note 97). On sm_90 the TMA kernel takes
// these at batch 1 (lab note 99); this path serves the cards and tunings without it.

constexpr int kMmaMaxWarps = 16;  // warps per block (4, 8 or 16) are chosen at launch
constexpr int kMmaU = 4;

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// bf16x2 {128 + q_j, 128 + q_{j+4}}: (w >> 4j) & 0x000f000f | 0x43004300 as one LOP3 (the
// compiler splits the two constants into two instructions otherwise).
__device__ __forceinline__ uint32_t nib_pair(uint32_t w, int j) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;"
      : "=r"(r)
      : "r"(w >> (4 * j)), "n"(0x000f000f), "n"(0x43004300));
  return r;
}

// The two mmas of one 32-bit word of a lane's int4 chunk: the nibble pairs (0, 4), (1, 5) and
// (2, 6), (3, 7) of rows g (w0) and g + 8 (w1) against that word's x fragment xv.
__device__ __forceinline__ void mma_int4_word(float (&d)[4], uint32_t w0, uint32_t w1,
                                              const uint4& xv) {
  {
    const uint32_t af[4] = {nib_pair(w0, 0), nib_pair(w1, 0), nib_pair(w0, 1), nib_pair(w1, 1)};
    mma_bf16_16816(d, af, xv.x, xv.y);
  }
  {
    const uint32_t af[4] = {nib_pair(w0, 2), nib_pair(w1, 2), nib_pair(w0, 3), nib_pair(w1, 3)};
    mma_bf16_16816(d, af, xv.z, xv.w);
  }
}

template <int M, GemvInput IN, GemvOutput OUT, int U, int GPB>
__global__ void __launch_bounds__(kMmaMaxWarps * 32, 1)
    gemv_int4_mma_kernel(const DeviceWeight w, const GemvArgs a, int early_dependents,
                         int norm_flags) {
  const int W = blockDim.x >> 5, nthreads = blockDim.x;
  extern __shared__ uint4 smem_u4[];
  const int K = static_cast<int>(w.k), Kp = static_cast<int>(w.k_padded);
  const int N = static_cast<int>(w.n);
  const int G = Kp / 128;                                   // 128-blocks per row
  const int nb = G / W;                                     // per warp and tile
  uint4* xf = smem_u4;                                      // [M][G][4 words][4 t]
  float* csum = reinterpret_cast<float*>(xf + M * G * 16);  // [M][G][GPB]
  float* red = csum + M * G * GPB;                          // [2][W][16 rows][8 cols]
  __shared__ float redb[32];
  __shared__ float inv_rms[M];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t xstride = a.x_stride ? a.x_stride : K;
  const int ntiles = (N + 15) / 16;
  static_assert(GPB == 1 || GPB == 2 || GPB == 4, "groups of 128+, 64 or 32");
  const int bpg = GPB == 1 ? w.group_size / 128 : 1;  // 128-blocks per scale group
  const int groups = Kp / w.group_size;
  const uint32_t* sbase = static_cast<const uint32_t*>(w.scale);  // int4 scale words
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = Kp / 2;

  trace_point(TraceKind::gemv_int4_mma, w.data, N, K, TracePoint::start);
  if (early_dependents) grid_dependents_launch();  // else in the last tile, below
  uint4 rq[U][2];
  uint32_t rs[U][2 * GPB];  // rows g, g + 8 of each group of the 128-block
  // Issue cursor (tile itile, 128-block igi) as pointers to this lane's weights and scales of
  // rows g and g + 8; a step within a tile adds constants (the launcher keeps W % bpg == 0).
  int itile = blockIdx.x, igi = warp;
  const uint8_t *p0, *p1;
  const uint32_t *q0, *q1;
  auto seek = [&]() {
    const int r0 = min(itile * 16 + g, N - 1), r1 = min(itile * 16 + g + 8, N - 1);
    const int64_t off = static_cast<int64_t>(igi) * 64 + t * 16;
    p0 = wbase + r0 * row_bytes + off;
    p1 = wbase + r1 * row_bytes + off;
    const int grp = GPB == 1 ? igi / bpg : igi * GPB;
    q0 = sbase + int4_scale_index(r0, grp, groups);
    q1 = sbase + int4_scale_index(r1, grp, groups);
  };
  seek();
  // (tile-major scales: the next group's word of a row is 16 words on)
  const int pstep = W * 64, qstep = GPB == 1 ? W / bpg * 16 : W * GPB * 16;
  auto issue = [&](uint4(&dq)[2], uint32_t(&ds)[2 * GPB]) {
    if (itile < ntiles) {
      dq[0] = load_stream(p0);
      dq[1] = load_stream(p1);
#pragma unroll
      for (int j = 0; j < GPB; ++j) {
        ds[2 * j] = __ldg(q0 + 16 * j);
        ds[2 * j + 1] = __ldg(q1 + 16 * j);
      }
    }
    igi += W;
    if (igi >= G) {
      igi = warp, itile += gridDim.x;
      seek();
    } else {
      p0 += pstep, p1 += pstep, q0 += qstep, q1 += qstep;
    }
  };
#pragma unroll
  for (int u = 0; u < U; ++u) issue(rq[u], rs[u]);
  // The one-pass RMSNorm's weights, before the wait (GemvNormWeights).
  GemvNormWeights<8, 2> nw;
  const bool late_nw = norm_flags & GemvNormFlags::late;
  if (IN == GemvInput::rmsnorm && !(norm_flags & GemvNormFlags::two_pass) && !late_nw)
    nw.load(a, K, Kp, threadIdx.x, nthreads);
  grid_dependency_wait();
  trace_point(TraceKind::gemv_int4_mma, w.data, N, K, TracePoint::wait_done);

  const bool vec = (K % 4 == 0) && (xstride % 4 == 0);
  // Prologue: x -> fragment-ordered bf16 + per-128 sums. A thread takes 8 consecutive k (one
  // word); 16 lanes cover one 128-block (Kp % 256 == 0 keeps the loops warp-uniform).
  auto stage8 = [&](int m, int j, const float* v) {
    float su = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
#pragma unroll
    for (int o = 1; o < 16 / GPB; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
    const int gi = j >> 7, tt = (j >> 5) & 3, wd = (j >> 3) & 3;
    if ((lane & (16 / GPB - 1)) == 0) csum[(m * G + gi) * GPB + (j & 127) / (128 / GPB)] = su;
    auto b = [&](int e) { return static_cast<uint32_t>(float_to_bf16_bits(v[e])); };
    xf[((m * G + gi) * 4 + wd) * 4 + tt] =
        make_uint4(b(0) | b(4) << 16, b(1) | b(5) << 16, b(2) | b(6) << 16, b(3) | b(7) << 16);
  };
  bool staged = false;
  if constexpr (IN == GemvInput::rmsnorm) {
    if (!(norm_flags & GemvNormFlags::two_pass))
      staged = gemv_rmsnorm_onepass<M, 8, 2>(
          a, K, Kp, xstride, vec, threadIdx.x, nthreads, nw, late_nw,
          [&](int, float ss) { return block_sum(ss, redb); }, stage8, [] {});
    if (!staged) gemv_inv_rms<M>(a, K, xstride, vec, redb, inv_rms);
    trace_point(TraceKind::gemv_int4_mma, w.data, N, K, TracePoint::rms_done);
  }
  for (int m = 0; m < M && !staged; ++m) {
    const float r = IN == GemvInput::rmsnorm ? inv_rms[m] : 1.f;
#pragma unroll 2
    for (int j = threadIdx.x * 8; j < Kp; j += nthreads * 8) {
      float v[8];
      gemv_x4<IN>(a, m, j, K, xstride, vec, r, v);
      gemv_x4<IN>(a, m, j + 4, K, xstride, vec, r, v + 4);
      stage8(m, j, v);
    }
  }
  __syncthreads();
  trace_point(TraceKind::gemv_int4_mma, w.data, N, K, TracePoint::prologue_done);

  int ctile = blockIdx.x, cnt = 0, parity = 0;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  // Lanes g >= M repeat x row M - 1 (and the sums c0, c1 likewise): accumulator columns >= M
  // hold copies no epilogue reads, and the loads need no predicate or zero fill.
  const int c0 = min(2 * t, M - 1), c1 = min(2 * t + 1, M - 1), gx = min(g, M - 1);
  while (ctile < ntiles) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (ctile >= ntiles) break;
      const int gi = warp + cnt * W;
      if constexpr (GPB == 1) {
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint4 xv = xf[((gx * G + gi) * 4 + wd) * 4 + t];
          mma_int4_word(d, word(rq[u][0], wd), word(rq[u][1], wd), xv);
        }
        const float cs0 = csum[c0 * G + gi], cs1 = csum[c1 * G + gi];
        const float2 s0 = int4_scale_bias(rs[u][0]), s1 = int4_scale_bias(rs[u][1]);
        const float z0 = fmaf(-128.f, s0.x, s0.y), z1 = fmaf(-128.f, s1.x, s1.y);
        acc[0] = fmaf(s0.x, d[0], fmaf(z0, cs0, acc[0]));
        acc[1] = fmaf(s0.x, d[1], fmaf(z0, cs1, acc[1]));
        acc[2] = fmaf(s1.x, d[2], fmaf(z1, cs0, acc[2]));
        acc[3] = fmaf(s1.x, d[3], fmaf(z1, cs1, acc[3]));
      } else {
        // One pass of the block's mmas per group: lane t's x only in its own group's pass.
        float d[GPB][4] = {};
        const int mine = t / (4 / GPB);
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint4 xv = xf[((gx * G + gi) * 4 + wd) * 4 + t];
          const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
          for (int j = 0; j < GPB; ++j)
            mma_int4_word(d[j], word(rq[u][0], wd), word(rq[u][1], wd), mine == j ? xv : zero4);
        }
#pragma unroll
        for (int j = 0; j < GPB; ++j) {
          const float cs0 = csum[(c0 * G + gi) * GPB + j], cs1 = csum[(c1 * G + gi) * GPB + j];
          const float2 s0 = int4_scale_bias(rs[u][2 * j]), s1 = int4_scale_bias(rs[u][2 * j + 1]);
          const float z0 = fmaf(-128.f, s0.x, s0.y), z1 = fmaf(-128.f, s1.x, s1.y);
          acc[0] = fmaf(s0.x, d[j][0], fmaf(z0, cs0, acc[0]));
          acc[1] = fmaf(s0.x, d[j][1], fmaf(z0, cs1, acc[1]));
          acc[2] = fmaf(s1.x, d[j][2], fmaf(z1, cs0, acc[2]));
          acc[3] = fmaf(s1.x, d[j][3], fmaf(z1, cs1, acc[3]));
        }
      }
      issue(rq[u], rs[u]);  // refill this slot U blocks ahead
      if (++cnt == nb) {
        // Tile done: reduce the W warps' partials, 16 threads run the epilogue.
        float* rb = red + parity * W * 128;
        rb[(warp * 16 + g) * 8 + 2 * t] = acc[0];
        rb[(warp * 16 + g) * 8 + 2 * t + 1] = acc[1];
        rb[(warp * 16 + g + 8) * 8 + 2 * t] = acc[2];
        rb[(warp * 16 + g + 8) * 8 + 2 * t + 1] = acc[3];
        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
        __syncthreads();
        if (!early_dependents && ctile + static_cast<int>(gridDim.x) >= ntiles)
          grid_dependents_launch();
        if (threadIdx.x < 16) {
          const int rl = threadIdx.x, row = ctile * 16 + rl;
          constexpr bool kPair = OUT == GemvOutput::rope_kv || OUT == GemvOutput::swiglu;
          if (row < N && (!kPair || (rl & 1) == 0)) {
            float s0v[M], s1v[M];
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float x0 = 0.f, x1 = 0.f;
#pragma unroll
              for (int ww = 0; ww < W; ++ww) {  // W is runtime: not unrolled
                x0 += rb[(ww * 16 + rl) * 8 + m];
                if (kPair) x1 += rb[(ww * 16 + rl + 1) * 8 + m];
              }
              s0v[m] = x0, s1v[m] = x1;
            }
            gemv_epilogue<M, OUT>(a, N, row, s0v, s1v);
          }
        }
        parity ^= 1;
        cnt = 0;
        ctile += gridDim.x;
      }
    }
  }
  if (tracing()) {
    __syncthreads();
    trace_point(TraceKind::gemv_int4_mma, w.data, N, K, TracePoint::end);
  }
}

// GemvTuning::tensor_cores = false (tests, lab) selects the CUDA-core int4 kernel.
inline bool int4_mma_enabled() { return gemv_tuning().tensor_cores; }

// Groups of the weight per 128-block of K: 1 (groups of 128 or 256), 2 (64) or 4 (32).
inline int int4_mma_gpb(const DeviceWeight& w) {
  return w.group_size == 64 ? 2 : w.group_size == 32 ? 4 : 1;
}

inline size_t int4_mma_smem(const DeviceWeight& w, int M, int W) {
  const size_t G = static_cast<size_t>(w.k_padded / 128);
  return static_cast<size_t>(M) * G * 256 + static_cast<size_t>(M) * G * 4 * int4_mma_gpb(w) +
         2 * static_cast<size_t>(W) * 128 * 4;
}

inline bool int4_mma_eligible(const DeviceWeight& w, int M) {
  // Groups of 128 or 256 (the engine's, both tested): a warp step (4, 8 or 16 blocks of 128)
  // spans whole groups, so the scale pointer advances by a constant. Groups of 64 and 32 at
  // batch 1 (the decode step; batches 2-8 keep the CUDA-core kernel, which bounds the
  // instantiations).
  const bool groups = w.group_size == 128 || w.group_size == 256 ||
                      (M == 1 && (w.group_size == 64 || w.group_size == 32));
  return int4_mma_enabled() && groups && w.k_padded % 1024 == 0 &&
         int4_mma_smem(w, M, 8) <= 96 * 1024;
}

template <int M, GemvInput IN, GemvOutput OUT, int GPB>
void launch_int4_mma_gpb(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);

template <int M, GemvInput IN, GemvOutput OUT>
void launch_int4_mma(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  if constexpr (M == 1) {
    if (w.group_size == 64) return launch_int4_mma_gpb<M, IN, OUT, 2>(w, a, s);
    if (w.group_size == 32) return launch_int4_mma_gpb<M, IN, OUT, 4>(w, a, s);
  }
  launch_int4_mma_gpb<M, IN, OUT, 1>(w, a, s);
}

template <int M, GemvInput IN, GemvOutput OUT, int GPB>
void launch_int4_mma_gpb(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  auto kernel = gemv_int4_mma_kernel<M, IN, OUT, kMmaU, GPB>;
  static bool configured = false;
  static int sms = 0;
  static size_t occ_smem[3] = {~size_t(0), ~size_t(0), ~size_t(0)};
  static int occ_blocks[3] = {0, 0, 0};
  if (!configured) {
    sms = opt_in_shared_memory(kernel, 96 * 1024);
    configured = true;
  }
  // Warps per block: the one whose last round of the persistent grid is fullest (16 rows per
  // tile; K-blocks per row must divide by the warps). Ties go to 8 warps.
  const int ntiles = static_cast<int>((w.n + 15) / 16);
  const int G = static_cast<int>(w.k_padded / 128);
  int best_w = 8, best_grid = 1;
  double best_eff = -1.0;
  const int order[3] = {8, 16, 4};
  static const int forced = [] {  // lab/test override: AO_GEMV_INT4_WARPS=4|8|16
    const char* e = std::getenv("AO_GEMV_INT4_WARPS");
    return e ? std::atoi(e) : 0;
  }();
  const bool force = (forced == 4 || forced == 8 || forced == 16) && G % forced == 0 &&
                     int4_mma_smem(w, M, forced) <= 96 * 1024;
  for (int oi = 0; oi < 3; ++oi) {
    const int W = order[oi], wi = W == 4 ? 0 : W == 8 ? 1 : 2;
    if (G % W != 0 || (force && W != forced)) continue;
    const size_t smem = int4_mma_smem(w, M, W);
    if (smem > 96 * 1024) continue;
    if (smem != occ_smem[wi]) {
      AO_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_blocks[wi], kernel, W * 32, smem));
      occ_smem[wi] = smem;
    }
    const int slots = std::max(1, occ_blocks[wi]) * sms;
    const int rounds = (ntiles + slots - 1) / slots;
    const double eff = static_cast<double>(ntiles) / (static_cast<double>(rounds) * slots);
    if (eff > best_eff + 0.05) best_eff = eff, best_w = W, best_grid = std::min(ntiles, slots);
  }
  GemvLaunch rec{true, best_w, 1, best_grid};
  rec.rows = M;
  record_gemv_launch(rec);
  launch_pdl(kernel, dim3(static_cast<unsigned>(best_grid)),
             dim3(static_cast<unsigned>(best_w * 32)), int4_mma_smem(w, M, best_w), s, w, a,
             early_dependents(), norm_flags());
}

// Quantized GEMV on the tensor cores for int4 (v7), int8 and fp8 (v8), included by gemv_impl.cuh
// inside its anonymous namespace. Same weight layouts as the CUDA-core kernel (row-major, no
// repacking): a warp computes a 16-row x KB-k block with mma.m16n8k16 (fp32 accumulate); lane
// (g = lane / 4, t = lane % 4) loads the 16-byte chunk t of rows g and g + 8 (KB = 128 int4 /
// 64 int8 or fp8 elements per 64-byte row segment). The k order inside an mma is a permutation
// of the physical k, which x (the B operand, column n = batch row m) follows: the prologue
// stages x in exactly that fragment order (one 16-byte shared load per two mmas).
//
// int4 (bf16 mma): a word's nibble pairs (j, j + 4) become bf16x2 {128 + q} with one shift and
// one LOP3 ((w >> 4j) & 0x000f000f | 0x43004300, exact); x is staged as bf16 with per-block sums
// Sx; per block and row y += s (D - 128 Sx) + (zero - 8 s) Sx (scales float2 {s, zero - 8 s}
// per (row, group), loaded with the weights).
// int8 (f16 mma): u = q + 128 (one xor per word) goes into the mantissa of 1024 with one PRMT per
// byte pair (fp16 bits 0x6400 | u = 1024 + u = 1152 + q, exact); per block y += D - 1152 Sx.
// fp8 e4m3 (f16 mma): cvt.f16x2.e4m3x2 per byte pair (exact). For both, x is staged as fp16
// after a per-row power-of-two scale 2^e that puts max|x| in [2^14, 2^15) (no overflow; values
// below 2^-28 max|x| lose bits, far under bf16 rounding of the output), undone with the per-row
// weight scale in the epilogue.
// A block of W warps owns 16 rows; the warps split K (blocks warp, warp + W, ...) and reduce
// through shared memory. The grid is persistent; each warp streams its weights through a ring of
// U register slots that runs on across tiles (the first U loads are issued before the
// grid-dependency wait).

constexpr int kMmaMaxWarps = 16;  // warps per block (4, 8 or 16) are chosen at launch
constexpr int kMmaU = 4;

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
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
// Bytes (2h, 2h + 1) of w as fp16x2: int8 (w already xor 0x80808080) {1024 + u}, fp8 e4m3 exact.
template <WeightFormat F>
__device__ __forceinline__ uint32_t byte_pair(uint32_t w, int h) {
  if constexpr (F == WeightFormat::int8) {
    return __byte_perm(w, 0x64646464u, h == 0 ? 0x5140 : 0x7362);
  } else {
    const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>(h == 0 ? w & 0xffffu : w >> 16), __NV_E4M3);
    return static_cast<uint32_t>(r.x) | static_cast<uint32_t>(r.y) << 16;
  }
}

template <WeightFormat F>
struct MmaFmt {
  static constexpr int KB = F == WeightFormat::int4 ? 128 : 64;  // k per 64-byte row segment
  static constexpr bool kSums = F != WeightFormat::fp8;          // per-block sums of x
};

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int U>
__global__ void __launch_bounds__(kMmaMaxWarps * 32, 1)
    gemv_mma_kernel(const DeviceWeight w, const GemvArgs a, int contiguous) {
  constexpr bool kInt4 = F == WeightFormat::int4;
  constexpr int KB = MmaFmt<F>::KB;
  const int W = blockDim.x >> 5, nthreads = blockDim.x;
  extern __shared__ uint4 smem_u4[];
  const int K = static_cast<int>(w.k), Kp = static_cast<int>(w.k_padded);
  const int N = static_cast<int>(w.n);
  const int G = Kp / KB;                                          // blocks per row
  const int nb = G / W;                                           // per warp and tile
  uint4* xf = smem_u4;                                            // [M][G][KB / 8] (16 B each)
  float* csum = reinterpret_cast<float*>(xf + M * G * (KB / 8));  // [M][G]
  float* red = csum + M * G;                                      // [2][W][16 rows][8 cols]
  __shared__ float redb[32];
  __shared__ float inv_rms[M];
  __shared__ float xexp[M];  // fp16 staging: x' = x 2^e, stored as 2^-e

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t xstride = a.x_stride ? a.x_stride : K;
  const int ntiles = (N + 15) / 16;
  const int bpg = kInt4 ? w.group_size / KB : 1;  // blocks per scale group
  const int groups = kInt4 ? Kp / w.group_size : 1;
  const float2* sbase = static_cast<const float2*>(w.scale);
  const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = kInt4 ? Kp / 2 : Kp;

  uint4 rq[U][2];
  float2 rs[U][2];  // int4 only
  // Issue cursor (tile itile, block igi) as pointers to this lane's weights (and int4 scales) of
  // rows g and g + 8; a step within a tile adds constants (the launcher keeps W % bpg == 0).
  // Blocks of a warp within a tile: warp, warp + W, ... or (contiguous) warp nb .. warp nb + nb - 1.
  const int gfirst = contiguous ? warp * nb : warp, gstep = contiguous ? 1 : W;
  const int gend = contiguous ? gfirst + nb : G;
  int itile = blockIdx.x, igi = gfirst;
  const uint8_t *p0, *p1;
  const float2 *q0, *q1;
  auto seek = [&]() {
    const int r0 = min(itile * 16 + g, N - 1), r1 = min(itile * 16 + g + 8, N - 1);
    const int64_t off = static_cast<int64_t>(igi) * 64 + t * 16;
    p0 = wbase + r0 * row_bytes + off;
    p1 = wbase + r1 * row_bytes + off;
    if constexpr (kInt4) {
      q0 = sbase + static_cast<int64_t>(r0) * groups + igi / bpg;
      q1 = sbase + static_cast<int64_t>(r1) * groups + igi / bpg;
    }
  };
  seek();
  const int pstep = gstep * 64, qstep = contiguous ? 1 : W / bpg;
  auto issue = [&](uint4(&dq)[2], float2(&ds)[2]) {
    if (itile < ntiles) {
      dq[0] = load_stream(p0);
      dq[1] = load_stream(p1);
      if constexpr (kInt4) {
        ds[0] = __ldg(q0);
        ds[1] = __ldg(q1);
      }
    }
    igi += gstep;
    if (igi >= gend) {
      igi = gfirst, itile += gridDim.x;
      seek();
    } else {
      p0 += pstep, p1 += pstep;
      if constexpr (kInt4) {
        if (!contiguous || (igi & (bpg - 1)) == 0) q0 += qstep, q1 += qstep;
      }
    }
  };
#pragma unroll
  for (int u = 0; u < U; ++u) issue(rq[u], rs[u]);
  grid_dependency_wait();

  const bool vec = (K % 4 == 0) && (xstride % 4 == 0);
  if constexpr (IN == GemvInput::rmsnorm) gemv_inv_rms<M>(a, K, xstride, vec, redb, inv_rms);
  // Prologue. A thread takes 8 consecutive k (one 16-byte smem word); KB / 8 lanes cover one
  // block (Kp % 256 == 0 keeps the loop warp-uniform).
  for (int m = 0; m < M; ++m) {
    const float r = IN == GemvInput::rmsnorm ? inv_rms[m] : 1.f;
    float sc = 1.f;
    if constexpr (!kInt4) {
      // fp16 range: the power of two that puts max|x| in [2^14, 2^15).
      float am = 0.f;
      for (int j = threadIdx.x * 4; j < K; j += nthreads * 4) {
        float v[4];
        gemv_x4<IN>(a, m, j, K, xstride, vec, r, v);
        am = fmaxf(am, fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
      }
      am = block_max(am, redb);
      int ex = 0;
      frexpf(am, &ex);
      const int e = am > 0.f ? max(-126, min(127, 15 - ex)) : 0;
      sc = ldexpf(1.f, e);
      if (threadIdx.x == 0) xexp[m] = ldexpf(1.f, -e);
    }
#pragma unroll 2
    for (int j = threadIdx.x * 8; j < Kp; j += nthreads * 8) {
      float v[8];
      gemv_x4<IN>(a, m, j, K, xstride, vec, r, v);
      gemv_x4<IN>(a, m, j + 4, K, xstride, vec, r, v + 4);
      if constexpr (kInt4) {
        // Fragment order: word wd of chunk tt holds k pairs (j + e, j + e + 4).
        float su = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
#pragma unroll
        for (int o = 1; o < 16; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
        const int gi = j >> 7, tt = (j >> 5) & 3, wd = (j >> 3) & 3;
        if ((lane & 15) == 0) csum[m * G + gi] = su;
        auto b = [&](int e) { return static_cast<uint32_t>(float_to_bf16_bits(v[e])); };
        xf[((m * G + gi) * 4 + wd) * 4 + tt] =
            make_uint4(b(0) | b(4) << 16, b(1) | b(5) << 16, b(2) | b(6) << 16, b(3) | b(7) << 16);
      } else {
        // Natural order: chunk tt (k 16 tt .. 16 tt + 15 of the block) = two words; word i of
        // the chunk feeds mma i (its bytes 0, 1 -> b0; 2, 3 -> b1).
        uint32_t h[4];
        float su = 0.f;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const __half2 p = __floats2half2_rn(v[2 * e] * sc, v[2 * e + 1] * sc);
          const float2 back = __half22float2(p);
          su += back.x + back.y;
          h[e] = *reinterpret_cast<const uint32_t*>(&p);
        }
        if constexpr (MmaFmt<F>::kSums) {
#pragma unroll
          for (int o = 1; o < 8; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
          if ((lane & 7) == 0) csum[m * G + (j >> 6)] = su;
        }
        xf[(m * G + (j >> 6)) * 8 + ((j >> 3) & 7)] = make_uint4(h[0], h[1], h[2], h[3]);
      }
    }
  }
  __syncthreads();

  int ctile = blockIdx.x, cnt = 0, parity = 0;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const float cmask0 = 2 * t < M ? 1.f : 0.f, cmask1 = 2 * t + 1 < M ? 1.f : 0.f;
  const int c0 = min(2 * t, M - 1), c1 = min(2 * t + 1, M - 1);
  while (ctile < ntiles) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (ctile >= ntiles) break;
      const int gi = contiguous ? gfirst + cnt : warp + cnt * W;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      if constexpr (kInt4) {
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint4 xv = g < M ? xf[((g * G + gi) * 4 + wd) * 4 + t] : make_uint4(0, 0, 0, 0);
          const uint32_t w0 = word(rq[u][0], wd), w1 = word(rq[u][1], wd);
          {
            const uint32_t af[4] = {nib_pair(w0, 0), nib_pair(w1, 0), nib_pair(w0, 1),
                                    nib_pair(w1, 1)};
            mma_bf16_16816(d, af, xv.x, xv.y);
          }
          {
            const uint32_t af[4] = {nib_pair(w0, 2), nib_pair(w1, 2), nib_pair(w0, 3),
                                    nib_pair(w1, 3)};
            mma_bf16_16816(d, af, xv.z, xv.w);
          }
        }
        const float cs0 = cmask0 * csum[c0 * G + gi], cs1 = cmask1 * csum[c1 * G + gi];
        const float2 s0 = rs[u][0], s1 = rs[u][1];
        const float z0 = fmaf(-128.f, s0.x, s0.y), z1 = fmaf(-128.f, s1.x, s1.y);
        acc[0] = fmaf(s0.x, d[0], fmaf(z0, cs0, acc[0]));
        acc[1] = fmaf(s0.x, d[1], fmaf(z0, cs1, acc[1]));
        acc[2] = fmaf(s1.x, d[2], fmaf(z1, cs0, acc[2]));
        acc[3] = fmaf(s1.x, d[3], fmaf(z1, cs1, acc[3]));
      } else {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const uint4 xv = g < M ? xf[(g * G + gi) * 8 + 2 * t + half] : make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int i = 0; i < 2; ++i) {  // mma 2 half + i: word 2 half + i of both rows
            uint32_t w0 = word(rq[u][0], 2 * half + i), w1 = word(rq[u][1], 2 * half + i);
            if constexpr (F == WeightFormat::int8) w0 ^= 0x80808080u, w1 ^= 0x80808080u;
            const uint32_t af[4] = {byte_pair<F>(w0, 0), byte_pair<F>(w1, 0), byte_pair<F>(w0, 1),
                                    byte_pair<F>(w1, 1)};
            mma_f16_16816(d, af, i == 0 ? xv.x : xv.z, i == 0 ? xv.y : xv.w);
          }
        }
        if constexpr (MmaFmt<F>::kSums) {
          const float cs0 = cmask0 * csum[c0 * G + gi], cs1 = cmask1 * csum[c1 * G + gi];
          acc[0] += fmaf(-1152.f, cs0, d[0]);
          acc[1] += fmaf(-1152.f, cs1, d[1]);
          acc[2] += fmaf(-1152.f, cs0, d[2]);
          acc[3] += fmaf(-1152.f, cs1, d[3]);
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[e] += d[e];
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
        if (ctile + static_cast<int>(gridDim.x) >= ntiles) grid_dependents_launch();
        if (threadIdx.x < 16) {
          const int rl = threadIdx.x, row = ctile * 16 + rl;
          constexpr bool kPair = OUT == GemvOutput::rope_kv || OUT == GemvOutput::swiglu;
          if (row < N && (!kPair || (rl & 1) == 0)) {
            // int8/fp8: the per-row weight scale times the batch row's 2^-e.
            const float* rscale = static_cast<const float*>(w.scale);
            const float ws0 = kInt4 ? 1.f : rscale[row];
            const float ws1 = kInt4 || !kPair ? 1.f : rscale[row + 1];
            float s0v[M], s1v[M];
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float x0 = 0.f, x1 = 0.f;
              for (int ww = 0; ww < W; ++ww) {  // W is runtime: not unrolled
                x0 += rb[(ww * 16 + rl) * 8 + m];
                if (kPair) x1 += rb[(ww * 16 + rl + 1) * 8 + m];
              }
              const float xs = kInt4 ? 1.f : xexp[m];
              s0v[m] = x0 * (ws0 * xs), s1v[m] = x1 * (ws1 * xs);
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
}

// GemvTuning::tensor_cores = false (tests, lab) selects the CUDA-core kernels.
inline bool mma_enabled() { return gemv_tuning().tensor_cores; }

inline int mma_kb(WeightFormat f) { return f == WeightFormat::int4 ? 128 : 64; }

inline size_t mma_smem(const DeviceWeight& w, int M, int W) {
  const size_t G = static_cast<size_t>(w.k_padded / mma_kb(w.format));
  return static_cast<size_t>(M) * static_cast<size_t>(w.k_padded) * 2 +
         static_cast<size_t>(M) * G * 4 + 2 * static_cast<size_t>(W) * 128 * 4;
}

template <WeightFormat F>
inline bool mma_eligible(const DeviceWeight& w, int M) {
  if (!mma_enabled() || w.act_quant != ActQuant::none) return false;
  // int4: groups of 128, 256 or 512, so a warp step (4, 8 or 16 blocks) spans whole groups.
  if (F == WeightFormat::int4 &&
      !(w.group_size == 128 || w.group_size == 256 || w.group_size == 512))
    return false;
  return w.k_padded % (mma_kb(F) * 8) == 0 && mma_smem(w, M, 8) <= 96 * 1024;
}

template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT>
void launch_mma(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  auto kernel = gemv_mma_kernel<F, M, IN, OUT, kMmaU>;
  static bool configured = false;
  static int sms = 0;
  static size_t occ_smem[3] = {~size_t(0), ~size_t(0), ~size_t(0)};
  static int occ_blocks[3] = {0, 0, 0};
  if (!configured) {
    sms = opt_in_shared_memory(kernel, 96 * 1024);
    configured = true;
  }
  // Warps per block: the one whose last round of the persistent grid is fullest (16 rows per
  // tile; blocks per row must divide by the warps). Ties go to 8 warps.
  const int ntiles = static_cast<int>((w.n + 15) / 16);
  const int G = static_cast<int>(w.k_padded / mma_kb(F));
  int best_w = 8, best_grid = 1;
  double best_eff = -1.0;
  const int order[3] = {8, 16, 4};
  static const int forced = [] {  // lab/test override: AO_GEMV_INT4_WARPS=4|8|16
    const char* e = std::getenv("AO_GEMV_INT4_WARPS");
    return e ? std::atoi(e) : 0;
  }();
  const bool force = (forced == 4 || forced == 8 || forced == 16) && G % forced == 0 &&
                     mma_smem(w, M, forced) <= 96 * 1024;
  for (int oi = 0; oi < 3; ++oi) {
    const int W = order[oi], wi = W == 4 ? 0 : W == 8 ? 1 : 2;
    if (G % W != 0 || (force && W != forced)) continue;
    const size_t smem = mma_smem(w, M, W);
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
  launch_pdl(kernel, dim3(static_cast<unsigned>(best_grid)),
             dim3(static_cast<unsigned>(best_w * 32)), mma_smem(w, M, best_w), s, w, a,
             gemv_tuning().mma_contiguous ? 1 : 0);
}

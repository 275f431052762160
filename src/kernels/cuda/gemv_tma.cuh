// Weight-streaming GEMV on the tensor cores with the weights staged through shared memory by the
// TMA (v8; bf16, int8 and int4 with groups of 128/256; int4 groups of 64/32 at batches 1-4),
// included by gemv_impl.cuh inside its anonymous namespace.
//
// Why: the decode-step timeline (docs/CUDA.md, lab note 19) showed the GEMVs streaming at 80-99%
// of copy bandwidth once they run, and 5-10 us lost around each one: the grid-dependency wait,
// a prologue that stages x (and the RMSNorm) while only the few KB of weights a register ring
// holds are in flight, and the last round's tail. Here one producer warp per block copies the
// block's weight stream into a ring of shared-memory stages (cp.async.bulk, completion counted
// on an mbarrier per stage) from the kernel's first instruction, independent of x: up to
// kTmaRingTarget bytes per SM are in flight while the consumers wait for the previous kernel and
// stage x, and the ring runs on across tiles without draining. Measured (lab notes 23, 27):
// faster for bf16 and, with the fp16 decode, for int8 at K >= 4096 (the defaults there); slower
// for int4, whose consumers cannot keep up.
//
// Layout. A tile is 16 rows; a stage holds either the whole rows of a tile (the tile's weights
// and, for int4, its scales are then one contiguous copy each) or `chunk` bytes of each of its 16
// rows (one bulk copy per row, lanes 0-15 of the producer warp, and for int4 the rows' scales of
// those columns, lanes 16-31). The TMA takes ~75 cycles per copy whatever its size, so tma_plan()
// keeps copies >= 1.5 KB on average. A 64-byte segment of a row is one warp step: lane
// (g = lane / 4, t = lane % 4) reads the 16 bytes t of rows g and g + 8 and feeds mma.m16n8k16
// (bf16 or fp16 in, fp32 accumulate) with A = the weights and B = x (column n = batch row m;
// lanes g >= M give zeros). The k order inside an mma is a permutation of the physical k that x,
// staged once per block in shared memory, follows:
//   bf16: a segment is 32 k; lane t's 8 k are 2 mmas, B = x in natural order (x staged as bf16).
//   int8: a segment is 64 k; each 32-bit word (4 k) of u = q + 128 becomes fp16x2 pairs
//         {1024 + u} of bytes 0,2 and 1,3 (one PRMT each, exact: 1152 + q), one f16 mma per word
//         of rows g and g + 8; x is staged as fp16 times a power-of-two scale per row (its max
//         |x| in [2^14, 2^15)); per segment y' += D - 1152 Sx' (Sx' = the segment's sum of the
//         scaled x), the per-row weight scale and the inverse x scale at the end. (Until
//         session 7: two bf16 mmas per word on its nibbles, 2.5x the integer instructions.)
//   int4: a segment is 128 k, nibbles as the register-ring kernel (gemv_int4_mma.cuh) but
//         decoded to fp16 (session 8): the nibble pairs (0, 4), (2, 6) of a word as 1024 + q,
//         (1, 5), (3, 7) as 1024 + 16 q (one LOP3 each, one shift per word), x staged as fp16
//         under the power-of-two row scale, divided by 16 for the second kind; per segment
//         y' += s (D - C') + (zero - 8 s) Sx', C' = 1024 Sa' + 64 Sb' from the staging.
//         At batch 1 (session 20, lab note 70) on the integer tensor cores instead: x as a
//         24-bit integer X = rn(x S) (S a power of two per row) in three signed base-256
//         digits, one per mma column; a word's low and high nibbles as unsigned bytes, one
//         mma.m16n8k32 (u8 x s8, int32 accumulate, exact) per word of rows g and g + 8; per
//         segment y' += s D + (zero - 8 s) SX, D = 65536 D2 + 256 D1 + D0 in fp32.
// The W consumer warps split each stage's segments (warp w takes w, w + W, ...), wait on the
// stage's full barrier, and release it (one arrive per warp) when done; the partial sums of P
// tiles (GemvTuning::tma_tile_group) meet in shared memory at one named barrier over the
// consumers, and 16 P threads run the epilogues (docs/CUDA.md lab note 61).

// Consumer warps (+ 1 producer warp): 8 for bf16 (2 mmas per 64-byte segment), 16 for int8 and
// fp8 (4 mmas and the byte PRMTs per segment), 12 for int4 (8 mmas and the nibble LOP3s per
// segment). int4 was measured with 8 to 16 warps (lab note 63, llama3-8b tg128, one engine):
// 12 fastest (679 tok/s against 652 with 16 and 663 with 8; 10, 11, 13-15 between 610 and 672,
// in no order by count). int8 and fp8 were slower with 12 than with 16.
template <WeightFormat F>
constexpr int tma_warps() {
  return F == WeightFormat::bf16 ? 8 : F == WeightFormat::int4 ? 12 : 16;
}
constexpr size_t kTmaRingTarget = 176 * 1024;  // bytes of weights in flight per block (bf16)
// Shared memory for x (with its sums and the partial sums) beside the ring: 64 KB, or this much
// for a weight only the TMA kernel takes (tma_plan's tma_only), which then has >= 128 KB of ring.
constexpr size_t kTmaOnlyMaxX = 96 * 1024;
// ... and for int4 at batches 2-4, whose other kernels take a long row of x at a tenth of the copy
// bandwidth (llama3-8b's down projection, K = 14336, at batch 4: 73 us on the v7 and CUDA-core
// kernels; lab note 100): x up to this much, the ring then >= ~80 KB.
constexpr size_t kTmaInt4BatchMaxX = 144 * 1024;
// Segments per consumer warp and tile whose x operands a warp may hold in registers (flag 128):
// ~9 registers each for int8/fp8 (K = 4096: 4 segments). int4 none: its ~18 per segment spilled
// to local memory, and its x from shared memory measured faster once 4-8 tiles share a tile-end
// barrier (docs/CUDA.md lab note 61).
template <WeightFormat F>
constexpr int tma_x_register_segments() {
  return F == WeightFormat::int4 ? 0 : 4;
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
// Global -> shared bulk copy (TMA), completion counted in bytes on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
}
// The same under an L2 cache policy (createpolicy), e.g. evict-first for a stream read once.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, uint64_t* bar,
                                          uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], "
      "[%1], %2, [%3], %4;" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}
// Barrier 1 over the W consumer warps only (the producer warp never joins it).
template <int W>
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(W * 32) : "memory");
}

// Shared-memory bytes of the barriers (full[stages], empty[stages], x_issued, and for
// int4_digits x_full: 16 stages + 16 <= the rounded size) before the ring.
__host__ __device__ constexpr size_t tma_barrier_bytes(int stages) {
  return (16 * static_cast<size_t>(stages) + 8 + 127) / 128 * 128;
}

template <WeightFormat F>
struct TmaFmt;
template <>
struct TmaFmt<WeightFormat::bf16> {
  static constexpr int kSeg = 32;   // k per 64-byte row segment
  static constexpr int kCsum = 0;   // k per x-sum entry (0: none)
  static constexpr int kCsumF = 0;  // floats per x-sum entry
};
template <>
struct TmaFmt<WeightFormat::int8> {
  static constexpr int kSeg = 64;
  static constexpr int kCsum = 64;
  static constexpr int kCsumF = 1;  // Sx'
};
template <>
struct TmaFmt<WeightFormat::fp8> : TmaFmt<WeightFormat::int8> {};  // the same byte layout
template <>
struct TmaFmt<WeightFormat::int4> {
  static constexpr int kSeg = 128;
  static constexpr int kCsum = 128;
  static constexpr int kCsumF = 2;  // {the fp16 decode's offset C', Sx'}
};
// Bytes of the tile-end partial sums: [2 (parity)][W][P tiles][16 rows][M columns] floats.
template <WeightFormat F>
__host__ __device__ constexpr size_t tma_red_bytes(int M, int P) {
  return static_cast<size_t>(2) * tma_warps<F>() * P * 16 * M * 4;
}
// Whether int4 at batch M runs on the integer tensor cores (x as three signed base-256 digits,
// mma.m16n8k32 u8 x s8; lab note 70): batch 1.
template <WeightFormat F>
__host__ __device__ constexpr bool tma_int4_imma(int M) {
  return F == WeightFormat::int4 && M == 1;
}
// Bytes of staged x for M rows of Kp: bf16/fp16 (2 per k), or the int4 batch-1 digits (3 per k).
template <WeightFormat F>
__host__ __device__ constexpr size_t tma_x_bytes(int M, int64_t Kp) {
  return tma_int4_imma<F>(M) ? static_cast<size_t>(Kp) * 3 : static_cast<size_t>(M) * Kp * 2;
}
// Bytes of the x-sum entries of M rows of Kp; int4 with GPS scale groups per segment (groups of
// 64: 2, of 32: 4) keeps them per group: at batch 1 one sum per group (a segment's two floats
// hold 2; 4 take two entries), at batches 2-4 one {C', Sx'} per group and row.
template <WeightFormat F>
__host__ __device__ constexpr size_t tma_csum_bytes(int M, int64_t Kp, int GPS = 1) {
  return TmaFmt<F>::kCsum ? static_cast<size_t>(M) * (Kp / TmaFmt<F>::kCsum) * TmaFmt<F>::kCsumF *
                                4 * (tma_int4_imma<F>(M) ? (GPS == 4 ? 2 : 1) : GPS)
                          : 0;
}
// int4 on the TMA kernel: scale groups per 128-k segment of w (1 for groups of 128 and 256, 2 for
// 64, 4 for 32).
__host__ __device__ constexpr int tma_int4_groups_per_segment(int group_size) {
  return group_size >= 128 ? 1 : 128 / group_size;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return static_cast<uint32_t>(float_to_bf16_bits(lo)) |
         static_cast<uint32_t>(float_to_bf16_bits(hi)) << 16;
}
__device__ __forceinline__ uint32_t pack_f16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// fp16x2 {1024 + (w & m), 1024 + (w >> 16 & m)} for a mask m of one nibble per half: (w & m) |
// 0x64006400 as one LOP3 (exact: a nibble at bits 0-3 gives 1024 + q, at bits 4-7 1024 + 16 q).
template <uint32_t kMask>
__device__ __forceinline__ uint32_t nib_f16(uint32_t w) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(w), "n"(kMask), "n"(0x64006400));
  return r;
}
// D += A B, m16n8k16, fp16 in, fp32 accumulate (int8: the weights as exact fp16 1152 + q).
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                              uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The two fp16 mmas of one 32-bit int4 word of rows g (w0) and g + 8 (w1): nibble pairs (0, 4)
// and (2, 6) as 1024 + q, (1, 5) and (3, 7) as 1024 + 16 q, against x fragments whose words y
// and w (the pairs (1, 5), (3, 7)) hold x / 16. 5 integer instructions per word (one shift, 4
// LOP3) instead of the bf16 decode's 7 (gemv_int4_mma.cuh's nib_pair).
__device__ __forceinline__ void mma_int4_word_f16(float (&d)[4], uint32_t w0, uint32_t w1,
                                                  const uint4& xv) {
  {
    const uint32_t af[4] = {nib_f16<0x000f000fu>(w0), nib_f16<0x000f000fu>(w1),
                            nib_f16<0x00f000f0u>(w0), nib_f16<0x00f000f0u>(w1)};
    mma_f16_16816(d, af, xv.x, xv.y);
  }
  const uint32_t h0 = w0 >> 8, h1 = w1 >> 8;
  {
    const uint32_t af[4] = {nib_f16<0x000f000fu>(h0), nib_f16<0x000f000fu>(h1),
                            nib_f16<0x00f000f0u>(h0), nib_f16<0x00f000f0u>(h1)};
    mma_f16_16816(d, af, xv.z, xv.w);
  }
}

// D += A B, m16n8k32, A unsigned bytes (int4 nibbles 0..15), B signed bytes (digits of x),
// int32 accumulate (exact).
__device__ __forceinline__ void mma_u8s8_16832(int (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two e4m3 values (bits 0-7 and 8-15 of v) as an fp16 pair, low half first: exact.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t v) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v & 0xffffu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | static_cast<uint32_t>(h.y) << 16;
}

// int4's x sums of a segment for the fp16 decode from the scaled sums of its two kinds of pairs:
// {C' = 1024 Sa' + 64 Sb', Sx' = Sa' + Sb'}.
__device__ __forceinline__ float2 fp16_int4_sums(float sa, float sb) {
  return make_float2(fmaf(1024.f, sa, 64.f * sb), sa + sb);
}
// The power-of-two scale that puts a row's max |x| in [2^14, 2^15) for the fp16 staging (1 for
// a zero or non-finite max; at most 2^126, so that its inverse stays finite).
__device__ __forceinline__ float fp16_row_scale(float mx) {
  int e = 0;
  frexpf(mx, &e);  // mx in [2^(e-1), 2^e)
  return mx > 0.f && mx < INFINITY ? ldexpf(1.f, min(15 - e, 126)) : 1.f;
}

// The head of the next GEMV's weight that the blocks prefetch into L2 once their own copies
// have landed (GemvArgs::next, GemvTuning::tma_prefetch_next_bytes): `data_bytes` of its data and
// `scale_bytes` of its scales from their starts (multiples of 16), each block an equal share.
struct TmaPrefetch {
  const uint8_t* data = nullptr;
  const uint8_t* scale = nullptr;
  int64_t data_bytes = 0, scale_bytes = 0;
};
// This block's share of [base, base + bytes) as L2 prefetches of up to 32 KB, one per lane.
__device__ __forceinline__ void l2_prefetch_share(const uint8_t* base, int64_t bytes, int lane) {
  if (bytes <= 0) return;
  const int64_t G = gridDim.x;
  const int64_t share = (bytes / G + 15) / 16 * 16;
  const int64_t b0 = blockIdx.x * share, b1 = min(bytes, b0 + share);
  constexpr int64_t kPiece = 32 * 1024;
  for (int64_t o = b0 + lane * kPiece; o < b1; o += 32 * kPiece) {
    const unsigned n = static_cast<unsigned>(min(kPiece, b1 - o));
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(base + o), "r"(n) : "memory");
  }
}

// GPS: int4 at batches 1-4 only, the weight's scale groups per 128-k segment (1: groups of 128 or
// 256; 2: 64; 4: 32; tma_int4_groups_per_segment).
template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT, int GPS = 1>
__global__ void __launch_bounds__((tma_warps<F>() + 1) * 32, 1)
    gemv_tma_kernel(const DeviceWeight w, const GemvArgs a, int chunk, int nstages,
                    int early_dependents, int hold, int lab_flags, const TmaPrefetch pf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // cp.async.bulk and mbarrier tx counts need sm_90; tma_plan() never picks it there
#else
  // Outside the kernel lab tma_flags() never sets the lab's switches (1, 2, 16, 64, 256: the math
  // or the stream skipped, the two-pass RMSNorm forced, reads from wrong addresses). int4's kernel
  // masks them so that the compiler drops their code: run 183, llama3-8b int4 g128 tg128 681.1 ->
  // 689.2 tok/s (three alternations); int8 measured 0.4-0.7% slower masked and keeps them, bf16
  // did not change (docs/CUDA.md lab note 68).
#ifdef AO_GEMV_EXPERIMENTS
  constexpr int kLabOnly = 0;
#else
  constexpr int kLabOnly = (F == WeightFormat::int4 ? 1 | 2 | 16 | 64 | 256 : 0) | 4096;
#endif
  const int flags = lab_flags & ~kLabOnly;
  constexpr int W = tma_warps<F>(), kCons = W * 32;
  constexpr int KS = TmaFmt<F>::kSeg;
  constexpr bool kInt4 = F == WeightFormat::int4, kInt8 = F == WeightFormat::int8;
  constexpr bool kFp8 = F == WeightFormat::fp8;  // weight-only e4m3: the int8 layout and staging
  constexpr bool kByte = kInt8 || kFp8;          // one byte per weight, a scale per row
  constexpr bool kF16 = kByte || kInt4;  // x staged as fp16 under a power-of-two scale per row
  // int4 at batch 1: x staged as a 24-bit integer under a power-of-two scale per row, in three
  // signed base-256 digits, against the nibbles as unsigned bytes on the integer tensor cores
  // (tma_int4_imma, lab note 70). It always stages directly (flag 4 does not apply).
  constexpr bool kImma = tma_int4_imma<F>(M);
  // x already staged by the previous kernel (GemvInput::int4_digits: the decode attention's
  // digits, a scale per segment): one bulk copy into shared memory instead of the prologue.
  constexpr bool kDig = IN == GemvInput::int4_digits;
  static_assert(!kDig || kImma, "int4_digits input: int4 weights at batch 1 only");
  static_assert(GPS == 1 || ((GPS == 2 || GPS == 4) && kInt4 && M <= 4 && !kDig),
                "groups of 64 / 32: int4 at batches 1-4 from a bf16 or RMSNorm x");
  // int4 in groups of 64 / 32 at batches 2-4 on the fp16 decode (lab note 100): the B operand's
  // 8 columns are kGpp column groups of kCw columns, one scale group each (column g: group
  // g / kCw of the pass, x row g % kCw); a lane supplies its x only to the columns of the group
  // its own 32 k lie in (t / (4 / GPS)) and zeros to the others, so one mma returns each group's
  // dot products in its own columns. kPassF passes over the same weight operands cover the
  // segment's GPS groups (2 only for groups of 32 at batches 3-4).
  constexpr bool kColGroups = kInt4 && !kImma && GPS > 1;
  constexpr int kGpp = kColGroups ? (GPS < 8 / M ? GPS : 8 / M) : 1;
  constexpr int kCw = 8 / kGpp;
  constexpr int kPassF = kColGroups ? GPS / kGpp : 1;
  extern __shared__ __align__(128) uint8_t tma_smem[];
  const int K = static_cast<int>(w.k), Kp = static_cast<int>(w.k_padded);
  const int N = static_cast<int>(w.n);
  const int ntiles = (N + 15) / 16;
  const int nseg = Kp / KS;    // segments per row
  const int spc = chunk / 64;  // segments per stage chunk
  const int64_t row_bytes = static_cast<int64_t>(nseg) * 64;
  const int chunks = static_cast<int>(row_bytes / chunk);  // stage chunks per tile
  const int gs = kInt4 ? w.group_size : 128;
  const int groups = Kp / gs;
  const int bpg_shift = gs == 256 ? 1 : 0;        // int4: log2 of segments per scale group
  const int sc = kInt4 ? chunk * 2 / gs * kInt4ScaleBytes : 0;  // scale bytes per row and chunk
  // A stage's weight rows lie rs bytes apart: chunk, or with flag 2048 (GemvTuning::tma_pad_rows)
  // chunk + 64, one copy per row: rows a multiple of 128 bytes apart put the two rows of a
  // quarter-warp's 16-byte loads in the same banks (2-way conflicts). int4's scales follow.
  const bool pad_w = flags & 2048;
  const int rs = chunk + (pad_w ? 64 : 0);
  const int stage_bytes = 16 * (rs + sc);
  uint64_t* full = reinterpret_cast<uint64_t*>(tma_smem);
  uint64_t* empty = full + nstages;
  uint64_t* x_issued = empty + nstages;  // every consumer warp has issued its x loads
  uint64_t* x_full = x_issued + 1;       // int4_digits: the staged x has landed
  uint8_t* ring = tma_smem + tma_barrier_bytes(nstages);
  uint4* xf = reinterpret_cast<uint4*>(ring + static_cast<size_t>(nstages) * stage_bytes);
  // [M][Kp / kCsum][kCsumF]
  float* csum = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(xf) + tma_x_bytes<F>(M, Kp));
  float2* csum2 = reinterpret_cast<float2*>(csum);   // int4: {C', Sx'}
  float* red = csum + tma_csum_bytes<F>(M, Kp, GPS) / 4;  // [2][W][P][16][M]
  __shared__ float rss[M * W];
  __shared__ float xamax[kF16 ? M * W : 1];  // int8/fp8/int4: max |x| per warp and row
  __shared__ float xinv[M];                  // int8/fp8/int4: 1 / the power-of-two scale of x
  __shared__ float xinv2[kImma ? M : 1];     // int4 at batch 1: 1 / its second factor
  __shared__ uint4 xzero[GPS > 1 ? 2 : 1];   // groups of 64 / 32: zero x operands (load_x)
  __shared__ unsigned long long x_last_ns;   // tracing: the last warp's x landing (TracePoint)

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::start);
  if (early_dependents) grid_dependents_launch();  // else by the producer once it is done
  if (threadIdx.x == 0) {
    for (int s = 0; s < nstages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], W);
    }
    mbar_init(x_issued, W);
    if (kDig) mbar_init(x_full, 1);
    if constexpr (GPS > 1) xzero[0] = xzero[1] = make_uint4(0u, 0u, 0u, 0u);
    x_last_ns = 0;
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  if (warp == W) {
    // Producer: the block's tiles in order, `chunk` bytes of 16 rows (+ their scales) per stage.
    // Weights are never written, so this needs no grid-dependency wait.
    const uint8_t* wbase = static_cast<const uint8_t*>(w.data);
    const uint8_t* sbase = static_cast<const uint8_t*>(w.scale);
    const int64_t srow = static_cast<int64_t>(groups) * kInt4ScaleBytes;
    // `hold` stages are issued before the consumers' x loads (GemvTuning::tma_hold_stages).
    int s = 0, phase = 0, nissued = 0;
    int last_s = 0, last_phase = 0;  // the last stage issued (the prefetch waits for it)
    bool first = true;
    // Flag 32 (GemvTuning::tma_evict_first): the weight stream marked evict-first in L2, so
    // that L2 keeps what is read again (lab note 40).
    const bool evict_first = flags & 32;
    uint64_t policy = 0;
    if (evict_first) asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    auto copy = [&](void* dst, const void* src, unsigned bytes, uint64_t* bar) {
      if (evict_first)
        bulk_load(dst, src, bytes, bar, policy);
      else
        bulk_load(dst, src, bytes, bar);
    };
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
      const int valid = min(16, N - tile * 16);  // rows of this tile (the rest stay stale)
      const int row = tile * 16 + min(lane & 15, valid - 1);
      for (int c = 0; c < chunks; ++c) {
        if (!first) mbar_wait(&empty[s], phase ^ 1);
        if (hold != 0 && nissued++ == max(hold, 0)) mbar_wait(x_issued, 0);
        uint8_t* st = ring + static_cast<size_t>(s) * stage_bytes;
        if (flags & 64) {
          // Lab flag 64: the stage marked full without a copy (wrong results: the consumers'
          // own rate, with no weight stream).
          if (lane == 0) mbar_arrive(&full[s]);
        } else if (chunks == 1 && !pad_w) {
          // Whole rows: the tile's weights and its scales are each one contiguous copy.
          if (lane == 0) {
            mbar_arrive_expect_tx(&full[s], valid * chunk + 16 * sc);
            copy(st, wbase + static_cast<int64_t>(tile) * 16 * row_bytes, valid * chunk, &full[s]);
            if (kInt4)
              copy(st + 16 * chunk, sbase + static_cast<int64_t>(tile) * 16 * srow, 16 * sc,
                   &full[s]);
          }
        } else {
          // `chunk` bytes of each row (lanes 0-15) and, for int4, the chunk's scales of the
          // tile's 16 rows, contiguous in the tile-major layout (int4_scale_index): one copy
          // (lane 16).
          if (lane == 0) mbar_arrive_expect_tx(&full[s], valid * chunk + 16 * sc);
          __syncwarp();
          if (kInt4 && lane == 16)
            copy(st + 16 * rs, sbase + (static_cast<int64_t>(tile) * 16 * srow + 16 * c * sc),
                 16 * sc, &full[s]);
          else if (lane < valid)
            copy(st + lane * rs, wbase + row * row_bytes + static_cast<int64_t>(c) * chunk, chunk,
                 &full[s]);
        }
        last_s = s, last_phase = phase;
        if (++s == nstages) s = 0, phase ^= 1, first = false;
      }
    }
    if (!early_dependents) grid_dependents_launch();
    // bf16 only: the formats that decode measured slower with it (GemvTuning::
    // tma_prefetch_next_bytes), and its code alone changed their kernels' registers.
    if constexpr (F == WeightFormat::bf16) {
      if (pf.data_bytes > 0 || pf.scale_bytes > 0) {
        // Once the block's own stream has landed (its last stage is full), the DRAM would idle
        // while the consumers finish: the next GEMV's first bytes go to L2 instead.
        mbar_wait(&full[last_s], last_phase);
        l2_prefetch_share(pf.data, pf.data_bytes, lane);
        l2_prefetch_share(pf.scale, pf.scale_bytes, lane);
      }
    }
    return;
  }

  // Consumers. Prologue: wait for the previous kernel, then x (after the fused RMSNorm) into
  // shared memory in the mma fragment order, with the per-segment sums of x.
  const int tid = threadIdx.x, g = lane >> 2, t = lane & 3;
  const int64_t xstride = a.x_stride ? a.x_stride : K;
  const bool vec = (K % 4 == 0) && (xstride % 4 == 0);
  // The one-pass RMSNorm's weights, before the wait (GemvNormWeights; flag 8: after it).
  GemvNormWeights<8, 2> nw;
  const bool late_nw = flags & 8;
  if (IN == GemvInput::rmsnorm && !(flags & 2) && !late_nw) nw.load(a, K, Kp, tid, kCons);
  grid_dependency_wait();
  trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::wait_done);
  // Stages x[m][j .. j + 7] (after the input op) in the mma fragment order, with the segment
  // sums of x for int8/fp8/int4.
  float am[M];  // int8/fp8/int4: this thread's max |x| per row (for the conversion pass)
  // int8/fp8/int4 with GemvTuning::tma_direct_fp16, where a one-pass prologue ran: each row's scale
  // xs[m] is known before staging (before_stage below), so x is staged as fp16 directly and the
  // conversion pass is skipped. The values are the same as the conversion's.
  float xs[M], xs2[kImma ? M : 1];  // xs2: int4 at batch 1, the scale's second factor
  bool f16_staging = false;
#pragma unroll
  for (int m = 0; m < M; ++m) am[m] = 0.f, xs[m] = 1.f;
  // Row m's fp16 scale from the per-warp maxima in xamax (after a consumer barrier).
  auto set_row_scale = [&](int m) {
    float row_max = 0.f;
#pragma unroll
    for (int ww = 0; ww < W; ++ww) row_max = fmaxf(row_max, xamax[m * W + ww]);
    if constexpr (kImma) {
      const float2 sc2 = imma_row_scale(row_max);
      xs[m] = sc2.x, xs2[m] = sc2.y;
      // A non-finite row gives NaN outputs: its digits cannot carry it.
      if (tid == 0) {
        xinv[m] = row_max < INFINITY ? 1.f / sc2.x : __int_as_float(0x7fc00000);
        xinv2[m] = 1.f / sc2.y;
      }
    } else {
      xs[m] = fp16_row_scale(row_max);
      if (tid == 0) xinv[m] = 1.f / xs[m];
    }
  };
  auto before_stage = [&](int m, float mx) {
    if constexpr (kF16) {
      if (!(flags & 4) && !kImma) return;
      mx = warp_max(mx);
      if (lane == 0) xamax[m * W + warp] = mx;
      consumer_sync<W>();
      set_row_scale(m);
      f16_staging = true;
    }
  };
  auto stage8 = [&](int m, int j, const float* v) {
    if constexpr (F == WeightFormat::bf16) {
      xf[(m * Kp + j) / 8] = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                        pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
    } else if constexpr (kByte) {
      // Words wd = (j % 16) / 4 .. + 1 of lane t = (j % 64) / 16 in segment j / 64: the pairs
      // (byte 0, byte 2) and (byte 1, byte 3) of each word.
      float su = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
#pragma unroll
      for (int o = 1; o < 8; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
      const int gi = j / 64, tt = (j % 64) / 16, half = (j % 16) / 8;
      uint4& dst = xf[((m * nseg + gi) * 4 + tt) * 2 + half];
      if (f16_staging) {
        const float s = xs[m];
        if ((lane & 7) == 0) csum[m * (Kp / 64) + gi] = su * s;
        dst = make_uint4(pack_f16x2(v[0] * s, v[2] * s), pack_f16x2(v[1] * s, v[3] * s),
                         pack_f16x2(v[4] * s, v[6] * s), pack_f16x2(v[5] * s, v[7] * s));
      } else {
        if ((lane & 7) == 0) csum[m * (Kp / 64) + gi] = su;
#pragma unroll
        for (int e = 0; e < 8; ++e) am[m] = fmaxf(am[m], fabsf(v[e]));
        dst = make_uint4(pack_bf16x2(v[0], v[2]), pack_bf16x2(v[1], v[3]), pack_bf16x2(v[4], v[6]),
                         pack_bf16x2(v[5], v[7]));
      }
    } else if constexpr (kImma) {
      // int4 at batch 1: X = rn(x S) (exact for every bf16 value above 2^-14 of the row's max;
      // |X| < 2^22) as signed digits X = 65536 d2 + 256 d1 + d0 (imma_digit_bytes8, common.cuh). Word
      // wd of lane t in segment j / 128 meets the nibbles 0, 2, 4, 6 (its low bytes, the mma's
      // b0) and 1, 3, 5, 7 (b1); digit n is the mma's column n (imma_digit_index's layout). The
      // segment's sum of X goes to .y.
      // With GPS groups per segment the sum is kept per group (16 / GPS lanes' 8 k each), in
      // csum[gi * GPS + group].
      uint32_t z[8];
      int su = imma_digit_bytes8(v, xs[m], xs2[m], z);
#pragma unroll
      for (int o = 1; o < 16 / GPS; o <<= 1) su += __shfl_xor_sync(0xffffffffu, su, o);
      const int gi = j >> 7, tt = (j >> 5) & 3, wd = (j >> 3) & 3;
      if constexpr (GPS == 1) {
        if ((lane & 15) == 0) csum2[gi] = make_float2(0.f, static_cast<float>(su));
      } else {
        if ((lane & (16 / GPS - 1)) == 0)
          csum[gi * GPS + (j & 127) / (128 / GPS)] = static_cast<float>(su);
      }
      uint32_t dg[3][2];
      imma_pack_digits(z, dg);
      uint2* xi = reinterpret_cast<uint2*>(xf);
#pragma unroll
      for (int n = 0; n < 3; ++n)
        xi[((gi * 2 + (wd >> 1)) * 12 + n * 4 + tt) * 2 + (wd & 1)] =
            make_uint2(dg[n][0], dg[n][1]);
    } else {
      // int4: word wd = (j / 8) % 4 of lane t = (j / 32) % 4 in segment j / 128, nibble pairs
      // (e, e + 4) (gemv_int4_mma.cuh). The fp16 decode reads the pairs (0, 4), (2, 6) as
      // 1024 + q and (1, 5), (3, 7) as 1024 + 16 q against x / 16: its offset per segment is
      // C = 1024 Sa + 64 Sb (a: the first pairs' x, b: the others'), formed once x is scaled.
      // With column groups (kColGroups) the sums are kept per scale group (16 / GPS lanes' 8 k
      // each), in csum2[(m * nseg + gi) * GPS + group].
      float sa = (v[0] + v[4]) + (v[2] + v[6]), sb = (v[1] + v[5]) + (v[3] + v[7]);
      constexpr int kSumLanes = kColGroups ? 16 / GPS : 16;
#pragma unroll
      for (int o = 1; o < kSumLanes; o <<= 1) {
        sa += __shfl_xor_sync(0xffffffffu, sa, o);
        sb += __shfl_xor_sync(0xffffffffu, sb, o);
      }
      const int gi = j >> 7, tt = (j >> 5) & 3, wd = (j >> 3) & 3;
      const int ci = kColGroups ? (m * nseg + gi) * GPS + (j & 127) / (128 / GPS) : m * nseg + gi;
      uint4& dst = xf[((m * nseg + gi) * 4 + wd) * 4 + tt];
      if (f16_staging) {
        const float s = xs[m], s1 = s * 0.0625f;
        if ((lane & (kSumLanes - 1)) == 0) csum2[ci] = fp16_int4_sums(sa * s, sb * s);
        dst = make_uint4(pack_f16x2(v[0] * s, v[4] * s), pack_f16x2(v[1] * s1, v[5] * s1),
                         pack_f16x2(v[2] * s, v[6] * s), pack_f16x2(v[3] * s1, v[7] * s1));
      } else {
        if ((lane & (kSumLanes - 1)) == 0) csum2[ci] = make_float2(sa, sb);
#pragma unroll
        for (int e = 0; e < 8; ++e) am[m] = fmaxf(am[m], fabsf(v[e]));
        dst = make_uint4(pack_bf16x2(v[0], v[4]), pack_bf16x2(v[1], v[5]), pack_bf16x2(v[2], v[6]),
                         pack_bf16x2(v[3], v[7]));
      }
    }
  };
  // A thread takes 8 consecutive k; Kp is a multiple of 256, so the loops are warp-uniform.
  // Each warp tells the producer once its x loads are issued, so that the stages it holds back
  // (GemvTuning::tma_hold_stages) queue behind them.
  auto issued = [&] {
    __syncwarp();
    if (lane == 0) mbar_arrive(x_issued);
  };
  bool staged = false;
  // The one-pass prologues below; bf16 weights take no before_stage hook (no fp16 scale), so
  // their code is the one measured before the hook existed.
  auto onepass = [&](auto&& hook) {
    if constexpr (IN == GemvInput::rmsnorm) {
      // One round of loads where the row fits the registers (gemv_rmsnorm_onepass); the lab's
      // AO_GEMV_RMS2=1 keeps the two passes below.
      if (flags & 2) return false;
      return gemv_rmsnorm_onepass<M, 8, 2>(
          a, K, Kp, xstride, vec, tid, kCons, nw, late_nw,
          [&](int m, float ss) {
            if (m == 0) {
              trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::x_landed);
              if (lane == 0 && tracing()) atomicMax(&x_last_ns, trace_now());
            }
            ss = warp_sum(ss);
            if (lane == 0) rss[m * W + warp] = ss;
            consumer_sync<W>();
            float tot = 0.f;
#pragma unroll
            for (int ww = 0; ww < W; ++ww) tot += rss[m * W + ww];
            return tot;
          },
          stage8, issued, hook);
    } else {
      // bf16 x (rows up to 16384) from one round of loads into registers.
      return gemv_bf16_onepass<M, 16384 / (kCons * 8)>(
          a, K, Kp, xstride, tid, kCons,
          [&](int m, int j, const float* v) {
            if (m == 0 && j == 0)
              trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::x_landed);
            // Lane 0's first staging of row 0 (j = its first k): its warp's x has landed.
            if (m == 0 && lane == 0 && j < kCons * 8 && tracing())
              atomicMax(&x_last_ns, trace_now());
            stage8(m, j, v);
          },
          issued, hook);
    }
  };
  if constexpr (kDig) {
    // The staged digits and the per-segment {1 / S, sum of X / S} in one transaction; the
    // epilogue's row scales are 1 (the segment scales are applied in the main loop).
    if (tid == 0) {
      const unsigned xb = static_cast<unsigned>(Kp) * 3, cb = static_cast<unsigned>(nseg) * 8;
      mbar_arrive_expect_tx(x_full, xb + cb);
      bulk_load(xf, a.x, xb, x_full);
      bulk_load(csum2, static_cast<const uint8_t*>(a.x) + xb, cb, x_full);
      xinv[0] = 1.f;
      xinv2[0] = 1.f;
    }
    issued();
    mbar_wait(x_full, 0);
    staged = true;
  } else if (flags & 4096) {
    // Lab flag 4096 (AO_TMA_NOSTAGE=1): x neither loaded nor staged (wrong results: the timing
    // without the prologue's work past the grid-dependency wait).
    issued();
    staged = true;
  } else if constexpr (kF16) {
    staged = onepass(before_stage);
  } else {
    staged = onepass(NoStageHook{});
  }
  if (IN == GemvInput::rmsnorm && staged)
    trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::rms_done);
  if (!kDig && !staged) {
    issued();
    float inv[M];
#pragma unroll
    for (int m = 0; m < M; ++m) inv[m] = 1.f;
    if constexpr (IN == GemvInput::rmsnorm) {
      const float* x = static_cast<const float*>(a.x);
      for (int m = 0; m < M; ++m) {
        float ss = 0.f;
        if (vec) {
          const float4* x4 = reinterpret_cast<const float4*>(x + m * xstride);
#pragma unroll 4
          for (int k = tid; k < K / 4; k += kCons) {
            const float4 v = x4[k];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
          }
        } else {
          for (int k = tid; k < K; k += kCons) ss += x[m * xstride + k] * x[m * xstride + k];
        }
        ss = warp_sum(ss);
        if (lane == 0) rss[m * W + warp] = ss;
      }
      consumer_sync<W>();
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float ss = 0.f;
#pragma unroll
        for (int ww = 0; ww < W; ++ww) ss += rss[m * W + ww];
        inv[m] = rsqrtf(ss / K + a.eps);
      }
      trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::rms_done);
    }
    if constexpr (kImma) {
      // The digits need the row's scale before staging: one more pass for its max |x|.
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float mx = 0.f;
        for (int j = tid * 8; j < Kp; j += kCons * 8) {
          float v[8];
          gemv_x4<IN>(a, m, j, K, xstride, vec, inv[m], v);
          gemv_x4<IN>(a, m, j + 4, K, xstride, vec, inv[m], v + 4);
#pragma unroll
          for (int e = 0; e < 8; ++e) mx = fmaxf(mx, fabsf(v[e]));
        }
        before_stage(m, mx);
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll 2
      for (int j = tid * 8; j < Kp; j += kCons * 8) {
        float v[8];
        gemv_x4<IN>(a, m, j, K, xstride, vec, inv[m], v);
        gemv_x4<IN>(a, m, j + 4, K, xstride, vec, inv[m], v + 4);
        stage8(m, j, v);
      }
    }
  }
  trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::staged);
  if constexpr (kF16 && !kImma)
    if (!f16_staging) {
      // x to fp16 under a power-of-two scale per row (max |x| in [2^14, 2^15): exact for every
      // bf16 value above 2^-29 of the row's max; int4's x / 16 words above 2^-25), in place, with
      // the segment sums scaled alike.
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float v = warp_max(am[m]);
        if (lane == 0) xamax[m * W + warp] = v;
      }
      consumer_sync<W>();
#pragma unroll
      for (int m = 0; m < M; ++m) set_row_scale(m);
      auto row_scale = [&](int m) {
        float s = xs[0];
#pragma unroll
        for (int mm = 1; mm < M; ++mm) s = m == mm ? xs[mm] : s;
        return s;
      };
      for (int i = tid; i < M * Kp / 8; i += kCons) {
        const float s = row_scale(i / (Kp / 8)), s1 = kInt4 ? s * 0.0625f : s;
        uint4 u = xf[i];
        auto cv = [](uint32_t b, float f) {
          return pack_f16x2(__uint_as_float(b << 16) * f, __uint_as_float(b & 0xffff0000u) * f);
        };
        xf[i] = make_uint4(cv(u.x, s), cv(u.y, s1), cv(u.z, s), cv(u.w, s1));
      }
      constexpr int kCg = kColGroups ? GPS : 1;  // x-sum entries per row and segment
      for (int i = tid; i < M * nseg * kCg; i += kCons) {
        const float s = row_scale(i / (nseg * kCg));
        if constexpr (kInt4) {
          const float2 v = csum2[i];  // {Sa, Sb} -> {C', Sx'}
          csum2[i] = fp16_int4_sums(v.x * s, v.y * s);
        } else {
          csum[i] *= s;
        }
      }
    }
  consumer_sync<W>();
  trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::prologue_done);
  if (tracing() && x_last_ns != 0)
    trace_point_at(TraceKind::gemv_tma, w.data, N, K, TracePoint::x_last, x_last_ns);

  // The x rows of this lane's accumulator columns 2t, 2t + 1 (with column groups: of its group
  // 2t / kCw).
  const int c0 = min((2 * t) % kCw, M - 1), c1 = min((2 * t + 1) % kCw, M - 1);
  // x column of this lane. Lanes g >= M repeat row M - 1 (and the sums c0, c1 likewise): the
  // accumulator columns >= M hold copies that no epilogue reads, and the loads need no predicate
  // or zero fill (run 53's SASS of the int4 loop: 8 register clears and predicated loads per
  // segment, with 4 multiplications by a column mask). With column groups the row is g % kCw.
  const int gx = min(g % kCw, M - 1);
  // Column groups: per pass p, where this lane's fp16 x operands come from (its row's words, or
  // the zeros where column g's group is not the one its k lie in), and the scale group (within
  // the segment) of its accumulator columns.
  const uint4* fsrc[kPassF];
  int fstep[kPassF], foff[kPassF];
  const int gacc = (2 * t) / kCw;
  if constexpr (kColGroups) {
#pragma unroll
    for (int p = 0; p < kPassF; ++p) {
      const bool sup = p * kGpp + g / kCw == t / (4 / GPS);
      fsrc[p] = sup ? xf + static_cast<size_t>(gx) * nseg * 16 + t : xzero;
      fstep[p] = sup ? 16 : 0;
      foff[p] = sup ? 4 : 0;
    }
  }
  // int4 at batch 1: lane (g, t) supplies digit n = min(g, 2) as the mma's column g and gets
  // columns 2t, 2t + 1 back: t = 0 holds digits 2 and 1 (weights 65536 and 256), t = 1 digit 0
  // (and a copy of it in column 3, weight 0), t = 2, 3 copies only. The segment's x sum goes to
  // lane t = 0.
  const int xn = min(g, 2);
  const float dw0 = t == 0 ? 65536.f : t == 1 ? 1.f : 0.f, dw1 = t == 0 ? 256.f : 0.f;
  const float xsum_on = t == 0 ? 1.f : 0.f;
  // int4: the stage rows whose scales this lane reads (g, g + 8); the lab's flag 16 reads row 0's
  // for all (wrong results: the timing without the scale loads' bank conflicts, lab note 37).
  const int sg0 = flags & 16 ? 0 : g, sg8 = flags & 16 ? 0 : g + 8;
  // One lane's x operands of segment gi (the B fragments of its mmas) and its x sums: int8's
  // Sx' of columns c0, c1 in .x, int4's {C', Sx'}.
  constexpr int kXv = kInt4 ? 4 * kPassF : kByte ? 2 : 1;
  struct XFrag {
    uint4 v[kXv];
    float2 cs0, cs1, cs2, cs3;  // cs2, cs3: the second pass's (column groups of 32 at batch 3-4)
  };
  // Groups of 64 / 32 (GPS = 2 / 4): lane t's 32 k of a segment lie in group t / (4 / GPS). One
  // mma pass per two groups (GPS = 2: one; GPS = 4: pass p takes groups 2p, 2p + 1): columns 0-2
  // carry the pass's first group's digits (supplied by that group's lanes t, zeros from the
  // others), columns 3-5 the second group's, 6-7 zeros. Lane (g, t) gets columns 2t, 2t + 1 back:
  // t = 0 the first group's digits 2 and 1, t = 1 its digit 0 and the second's digit 2, t = 2 the
  // second's digits 1 and 0, t = 3 nothing. A lane that supplies zeros reads them from xzero.
  constexpr int kPasses = GPS == 4 ? 2 : 1;
  const uint4* xsrc[kPasses];
  int xstep[kPasses], xoff2[kPasses];
  float wa0 = 0.f, wa1 = 0.f, wb0 = 0.f, wb1 = 0.f;  // column weights: first / second group
  const float xa_on = t == 0 ? 1.f : 0.f, xb_on = t == 2 ? 1.f : 0.f;  // whose lane adds Sx terms
  if constexpr (GPS > 1) {
    const int plane = g < 3 ? g : g < 6 ? g - 3 : 0;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int first = GPS == 2 ? 0 : 2 * p;  // the pass's first group
      const bool sup = g < 6 && t / (4 / GPS) == first + (g >= 3 ? 1 : 0);
      xsrc[p] = sup ? xf + plane * 4 + t : xzero;
      xstep[p] = sup ? 24 : 0;
      xoff2[p] = sup ? 12 : 1;
    }
    auto colw = [](int c) {
      return c >= 6 ? 0.f : c % 3 == 0 ? 65536.f : c % 3 == 1 ? 256.f : 1.f;
    };
    const int c0w = 2 * t, c1w = 2 * t + 1;
    wa0 = c0w < 3 ? colw(c0w) : 0.f, wb0 = c0w >= 3 ? colw(c0w) : 0.f;
    wa1 = c1w < 3 ? colw(c1w) : 0.f, wb1 = c1w >= 3 ? colw(c1w) : 0.f;
  }
  auto load_x = [&](int gi) {
    XFrag f;
    f.cs0 = f.cs1 = f.cs2 = f.cs3 = make_float2(0.f, 0.f);
    if constexpr (kColGroups) {
#pragma unroll
      for (int p = 0; p < kPassF; ++p)
#pragma unroll
        for (int i = 0; i < 4; ++i) f.v[p * 4 + i] = fsrc[p][gi * fstep[p] + i * foff[p]];
      const int e = gi * GPS + gacc;  // {C', Sx'} of the first pass's group, rows c0 and c1
      f.cs0 = csum2[c0 * nseg * GPS + e];
      f.cs1 = csum2[c1 * nseg * GPS + e];
      if constexpr (kPassF == 2) {
        f.cs2 = csum2[c0 * nseg * GPS + e + kGpp];
        f.cs3 = csum2[c1 * nseg * GPS + e + kGpp];
      }
    } else if constexpr (kImma && GPS > 1) {
#pragma unroll
      for (int p = 0; p < kPasses; ++p) {
        f.v[2 * p] = xsrc[p][gi * xstep[p]];
        f.v[2 * p + 1] = xsrc[p][gi * xstep[p] + xoff2[p]];
      }
      f.cs0 = csum2[gi * (GPS / 2)];  // {Sx of the first pass's two groups}
      if constexpr (GPS == 4) f.cs1 = csum2[gi * 2 + 1];
    } else if constexpr (kImma) {
      f.v[0] = xf[(gi * 2) * 12 + xn * 4 + t];
      f.v[1] = xf[(gi * 2 + 1) * 12 + xn * 4 + t];
      f.cs0 = csum2[gi];
    } else {
#pragma unroll
      for (int i = 0; i < kXv; ++i)
        f.v[i] = xf[((gx * nseg + gi) * 4 + (kInt4 ? i : t)) * kXv + (kInt4 ? t : i)];
      if constexpr (kInt8) {
        f.cs0.x = csum[c0 * nseg + gi];
        f.cs1.x = csum[c1 * nseg + gi];
      } else if constexpr (kInt4) {
        f.cs0 = csum2[c0 * nseg + gi];
        f.cs1 = csum2[c1 * nseg + gi];
      }
    }
    return f;
  };
  // x held in registers (GemvTuning::tma_x_registers, flag 128; lab note 53): where each
  // consumer warp takes the same segments of every tile (spc a multiple of W) and there are at
  // most kXr of them (K <= 4096: 4 for int8/fp8; int4 never), the warp loads their x operands
  // once after the prologue instead of once per tile: the main loop then reads only the weights
  // from shared memory. Batch 1 only (the fragments cost ~36 registers).
  constexpr bool kXreg = kF16 && M == 1 && tma_x_register_segments<F>() > 0;
  constexpr int kXr = kXreg ? tma_x_register_segments<F>() : 1;
  const int spw = spc / W;  // segments per warp and stage when spc % W == 0
  const int nper = chunks * spw;
  // Set by launch_tma where it applies; the shape checks keep a wrong flag from misreading x.
  const bool xreg = kXreg && (flags & 128) && spc % W == 0 && (spw == 1 || spw == 2) && nper <= kXr;
  XFrag xr[kXr];
  if (xreg) {
#pragma unroll
    for (int i = 0; i < kXr; ++i)
      if (i < nper) xr[i] = load_x((i / spw) * spc + warp + (i % spw) * W);
  }
  constexpr bool kPair = OUT == GemvOutput::rope_kv || OUT == GemvOutput::swiglu;
  int s = 0, phase = 0, parity = 0;
  // The ring's next stage once it is full, and its release (one arrive per warp) after the math.
  auto acquire_stage = [&] {
    mbar_wait(&full[s], phase);
    return static_cast<const uint8_t*>(ring + static_cast<size_t>(s) * stage_bytes);
  };
  auto release_stage = [&] {
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
    if (++s == nstages) s = 0, phase ^= 1;
  };
  // Tiles per tile-end barrier P (GemvTuning::tma_tile_group, flags 512 and 1024 = log2 P): a
  // block's tiles tile, tile + gridDim.x, ..., tile + (P - 1) gridDim.x share one barrier and one
  // epilogue (16 P threads, one row each).
  const int P = 1 << (flags >> 9 & 3);
  // The math of one tile (its stages, in the producer's order) into acc (rows g, g + 8).
  auto run_tile = [&](float(&acc)[4]) {
    float acc2[4] = {0.f, 0.f, 0.f, 0.f};  // int8's second chain
    // A segment's weights in stage st: lane (g, t)'s 16 bytes of rows g and g + 8.
    // (Lab flag 256: rows g and g + 8 read 64 bytes apart instead of a row apart, wrong results:
    // the timing without the 2-way bank conflicts of rows a whole number of 128 bytes apart.)
    const int rstride = flags & 256 ? 64 : rs;
    auto weights = [&](const uint8_t* st, int sg, uint4& q0, uint4& q1) {
      q0 = *reinterpret_cast<const uint4*>(st + g * rstride + sg * 64 + t * 16);
      q1 = *reinterpret_cast<const uint4*>(st + (g + 8) * rstride + sg * 64 + t * 16);
    };
    // The math of segment sg of stage st (weights q0, q1) against the x operands xv.
    auto segment = [&](const uint8_t* st, int sg, const XFrag& xv, const uint4& q0,
                       const uint4& q1) {
      if constexpr (F == WeightFormat::bf16) {
        {
          const uint32_t af[4] = {q0.x, q1.x, q0.y, q1.y};
          mma_bf16_16816(acc, af, xv.v[0].x, xv.v[0].y);
        }
        {
          const uint32_t af[4] = {q0.z, q1.z, q0.w, q1.w};
          mma_bf16_16816(acc, af, xv.v[0].z, xv.v[0].w);
        }
      } else if constexpr (kByte) {
        // int8: u = q + 128 (one XOR per word) into the mantissa of fp16 1024 by one PRMT per
        // byte pair: 0x6400 | u = 1152 + q, exact; per segment y' += D - 1152 Sx'. fp8 (e4m3):
        // one PRMT per word puts the pairs (byte 0, byte 2) and (byte 1, byte 3) in its halves,
        // one cvt per pair gives their fp16 values (exact), no offset.
#pragma unroll
        for (int hw = 0; hw < 2; ++hw) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            uint32_t af[4];
            if constexpr (kFp8) {
              const uint32_t p0 = __byte_perm(word(q0, 2 * hw + e), 0u, 0x3120);
              const uint32_t p1 = __byte_perm(word(q1, 2 * hw + e), 0u, 0x3120);
              af[0] = e4m3x2_to_f16x2(p0), af[1] = e4m3x2_to_f16x2(p1);
              af[2] = e4m3x2_to_f16x2(p0 >> 16), af[3] = e4m3x2_to_f16x2(p1 >> 16);
            } else {
              const uint32_t u0 = word(q0, 2 * hw + e) ^ 0x80808080u;
              const uint32_t u1 = word(q1, 2 * hw + e) ^ 0x80808080u;
              af[0] = __byte_perm(u0, 0x64646464u, 0x4240);
              af[1] = __byte_perm(u1, 0x64646464u, 0x4240);
              af[2] = __byte_perm(u0, 0x64646464u, 0x4341);
              af[3] = __byte_perm(u1, 0x64646464u, 0x4341);
            }
            mma_f16_16816(e == 0 ? acc : acc2, af, e == 0 ? xv.v[hw].x : xv.v[hw].z,
                          e == 0 ? xv.v[hw].y : xv.v[hw].w);
          }
        }
        if constexpr (kInt8) {
          acc[0] = fmaf(-1152.f, xv.cs0.x, acc[0]);
          acc[1] = fmaf(-1152.f, xv.cs1.x, acc[1]);
          acc[2] = fmaf(-1152.f, xv.cs0.x, acc[2]);
          acc[3] = fmaf(-1152.f, xv.cs1.x, acc[3]);
        }
      } else if constexpr (kImma && GPS > 1) {
        // Groups of 64 / 32: the words' nibbles as below, one mma per word and pass against that
        // pass's x operands (load_x); per pass and row y += s (D - 8 Sx) + zero Sx of each group.
        int d[kPasses][2][4] = {};
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint32_t w0 = word(q0, wd), w1 = word(q1, wd);
          const uint32_t af[4] = {w0 & 0x0f0f0f0fu, w1 & 0x0f0f0f0fu, (w0 >> 4) & 0x0f0f0f0fu,
                                  (w1 >> 4) & 0x0f0f0f0fu};
#pragma unroll
          for (int p = 0; p < kPasses; ++p) {
            const uint4& xa = xv.v[2 * p + (wd >> 1)];
            mma_u8s8_16832(d[p][wd & 1], af, wd & 1 ? xa.z : xa.x, wd & 1 ? xa.w : xa.y);
          }
        }
        const uint8_t* scl = st + 16 * rs;
        auto sz = [&](int grp, int row) {
          return int4_scale_zero(
              *reinterpret_cast<const uint32_t*>(scl + (grp * 16 + row) * kInt4ScaleBytes));
        };
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
          const int ga = sg * GPS + (GPS == 2 ? 0 : 2 * p);  // the pass's first group in the stage
          const float2 sxp = p == 0 ? xv.cs0 : xv.cs1;
          const float xa = xa_on * sxp.x, xb = xb_on * sxp.y;
#pragma unroll
          for (int h = 0; h < 2; ++h) {  // rows g (h = 0) and g + 8
            const int row = h ? sg8 : sg0;
            const float2 za = sz(ga, row), zb = sz(ga + 1, row);
            const float e0 = static_cast<float>(d[p][0][2 * h] + d[p][1][2 * h]);
            const float e1 = static_cast<float>(d[p][0][2 * h + 1] + d[p][1][2 * h + 1]);
            const float va = fmaf(wa0, e0, fmaf(wa1, e1, -8.f * xa));
            const float vb = fmaf(wb0, e0, fmaf(wb1, e1, -8.f * xb));
            acc[2 * h] = fmaf(za.x, va, fmaf(za.y, xa, fmaf(zb.x, vb, fmaf(zb.y, xb, acc[2 * h]))));
          }
        }
      } else if constexpr (kImma) {
        // Per word: its low nibbles (w & 0x0f0f0f0f) and high nibbles as unsigned bytes, rows g
        // and g + 8, one mma against the digits of their x; two accumulator chains.
        int da[4] = {0, 0, 0, 0}, db[4] = {0, 0, 0, 0};
        const uint32_t xw[8] = {xv.v[0].x, xv.v[0].y, xv.v[0].z, xv.v[0].w,
                                xv.v[1].x, xv.v[1].y, xv.v[1].z, xv.v[1].w};
#pragma unroll
        for (int wd = 0; wd < 4; ++wd) {
          const uint32_t w0 = word(q0, wd), w1 = word(q1, wd);
          const uint32_t af[4] = {w0 & 0x0f0f0f0fu, w1 & 0x0f0f0f0fu, (w0 >> 4) & 0x0f0f0f0fu,
                                  (w1 >> 4) & 0x0f0f0f0fu};
          mma_u8s8_16832(wd & 1 ? db : da, af, xw[2 * wd], xw[2 * wd + 1]);
        }
        // {s, zero} of rows g and g + 8: y += s (D - 8 Sx) + zero Sx, the 8 Sx folded into D's
        // last FMA (no zero - 8 s per row).
        const float2 s0 = int4_scale_zero(*reinterpret_cast<const uint32_t*>(
            st + 16 * rs + ((sg >> bpg_shift) * 16 + sg0) * kInt4ScaleBytes));
        const float2 s1 = int4_scale_zero(*reinterpret_cast<const uint32_t*>(
            st + 16 * rs + ((sg >> bpg_shift) * 16 + sg8) * kInt4ScaleBytes));
        const float sx = xsum_on * xv.cs0.y, m8sx = -8.f * sx;
        // Sum over the digits: D = 65536 D2 + 256 D1 (lane t = 0) or D0 (t = 1), in fp32.
        if constexpr (kDig) {
          // The segment's own x scale: .x = 1 / S_seg (.y is already the sum of X / S_seg).
          const float v0 = fmaf(fmaf(dw0, static_cast<float>(da[0] + db[0]),
                                     dw1 * static_cast<float>(da[1] + db[1])),
                                xv.cs0.x, m8sx);
          const float v1 = fmaf(fmaf(dw0, static_cast<float>(da[2] + db[2]),
                                     dw1 * static_cast<float>(da[3] + db[3])),
                                xv.cs0.x, m8sx);
          acc[0] = fmaf(s0.x, v0, fmaf(s0.y, sx, acc[0]));
          acc[2] = fmaf(s1.x, v1, fmaf(s1.y, sx, acc[2]));
        } else {
          const float v0 = fmaf(dw0, static_cast<float>(da[0] + db[0]),
                                fmaf(dw1, static_cast<float>(da[1] + db[1]), m8sx));
          const float v1 = fmaf(dw0, static_cast<float>(da[2] + db[2]),
                                fmaf(dw1, static_cast<float>(da[3] + db[3]), m8sx));
          acc[0] = fmaf(s0.x, v0, fmaf(s0.y, sx, acc[0]));
          acc[2] = fmaf(s1.x, v1, fmaf(s1.y, sx, acc[2]));
        }
      } else {
        // fp16 decode (mma_int4_word_f16); one accumulator chain of 2 mmas per word (four
        // independent chains instead of one of 8: lab note 37 found the loop latency-bound).
        // Per segment and row: y' += s (D - C') + (zero - 8 s) Sx'. With column groups
        // (kColGroups), once per pass against that pass's x operands, each lane applying the
        // scale group of its accumulator columns (tile end: the groups' columns summed).
#pragma unroll
        for (int p = 0; p < kPassF; ++p) {
          float dw[4][4];
#pragma unroll
          for (int wd = 0; wd < 4; ++wd) {
#pragma unroll
            for (int i = 0; i < 4; ++i) dw[wd][i] = 0.f;
            mma_int4_word_f16(dw[wd], word(q0, wd), word(q1, wd), xv.v[p * 4 + wd]);
          }
          // The stage's scale group: tile-major, 16 rows of kInt4ScaleBytes each.
          const int grp = kColGroups ? sg * GPS + p * kGpp + gacc : sg >> bpg_shift;
          const uint32_t* scl = reinterpret_cast<const uint32_t*>(st + 16 * rs) + grp * 16;
          const float2 s0 = int4_scale_bias(scl[sg0]), s1 = int4_scale_bias(scl[sg8]);
          const float2 cs0 = p ? xv.cs2 : xv.cs0, cs1 = p ? xv.cs3 : xv.cs1;
          float D[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) D[i] = (dw[0][i] + dw[1][i]) + (dw[2][i] + dw[3][i]);
          acc[0] = fmaf(s0.x, D[0] - cs0.x, fmaf(s0.y, cs0.y, acc[0]));
          acc[1] = fmaf(s0.x, D[1] - cs1.x, fmaf(s0.y, cs1.y, acc[1]));
          acc[2] = fmaf(s1.x, D[2] - cs0.x, fmaf(s1.y, cs0.y, acc[2]));
          acc[3] = fmaf(s1.x, D[3] - cs1.x, fmaf(s1.y, cs1.y, acc[3]));
        }
      }
    };
    if (xreg) {
      // The warp's segments of the tile, SPW per stage (1 or 2: launch_tma), with x from its
      // registers; a stage's weight loads are all issued before its math.
      auto run = [&](auto spw_c) {
        constexpr int SPW = decltype(spw_c)::value;
#pragma unroll
        for (int c = 0; c < kXr / SPW; ++c) {
          if (c < chunks) {
            const uint8_t* st = acquire_stage();
            uint4 q[SPW][2];
#pragma unroll
            for (int j = 0; j < SPW; ++j) weights(st, warp + j * W, q[j][0], q[j][1]);
#pragma unroll
            for (int j = 0; j < SPW; ++j)
              segment(st, warp + j * W, xr[c * SPW + j], q[j][0], q[j][1]);
            release_stage();
          }
        }
      };
      if (spw == 2)
        run(std::integral_constant<int, 2>{});
      else
        run(std::integral_constant<int, 1>{});
    } else {
      for (int c = 0; c < chunks; ++c) {
        const uint8_t* st = acquire_stage();
#pragma unroll 2
        for (int sg = warp; sg < (flags & 1 ? 0 : spc); sg += W) {
          uint4 q0, q1;
          weights(st, sg, q0, q1);
          segment(st, sg, load_x(c * spc + sg), q0, q1);
        }
        release_stage();
      }
    }
    if constexpr (kByte)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += acc2[i];
  };
  const int G = static_cast<int>(gridDim.x);
  for (int tile = blockIdx.x; tile < ntiles; tile += P * G) {
    // The W warps' partials of the P tiles meet in shared memory ([W][P][16 rows][M columns]:
    // lane (g, t) holds columns 2t and 2t + 1 of rows g and g + 8); 16 P threads run the
    // epilogue, one row each.
    float* rb = red + parity * W * P * 16 * M;
    for (int p = 0; p < P && tile + p * G < ntiles; ++p) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      run_tile(acc);
      if constexpr (kImma) {  // lanes t = 0 and 1 (groups of 64 / 32: 0-2) hold parts of each row
        acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 1);
        acc[2] += __shfl_xor_sync(0xffffffffu, acc[2], 1);
        if constexpr (GPS > 1) {
          acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 2);
          acc[2] += __shfl_xor_sync(0xffffffffu, acc[2], 2);
        }
      } else if constexpr (kColGroups) {
        // Column groups: lanes t and t ^ 2 (kCw = 4), or all four (kCw = 2), hold the same rows
        // of different groups; lanes with 2t < kCw (>= M) then hold the rows' sums.
#pragma unroll
        for (int o = kCw / 2; o < 4; o <<= 1)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
      }
      const int r = (warp * P + p) * 16 + g;
      if (2 * t < M) rb[r * M + 2 * t] = acc[0], rb[(r + 8) * M + 2 * t] = acc[2];
      if (2 * t + 1 < M) rb[r * M + 2 * t + 1] = acc[1], rb[(r + 8) * M + 2 * t + 1] = acc[3];
    }
    consumer_sync<W>();
    if (tid < 16 * P) {
      const int p = tid >> 4, rl = tid & 15, row = (tile + p * G) * 16 + rl;
      if (tile + p * G < ntiles && row < N && (!kPair || (rl & 1) == 0)) {
        const float* rscale = static_cast<const float*>(w.scale);
        const float r0 = kByte ? rscale[row] : 1.f;
        const float r1 = kByte && kPair ? rscale[row + 1] : 1.f;
        float s0v[M], s1v[M];
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float x0 = 0.f, x1 = 0.f;
#pragma unroll
          for (int ww = 0; ww < W; ++ww) {
            x0 += rb[((ww * P + p) * 16 + rl) * M + m];
            if (kPair) x1 += rb[((ww * P + p) * 16 + rl + 1) * M + m];
          }
          const float xi = kF16 ? xinv[m] : 1.f;
          if constexpr (kImma) x0 *= xinv2[m], x1 *= xinv2[m];
          s0v[m] = x0 * r0 * xi, s1v[m] = x1 * r1 * xi;
        }
        gemv_epilogue<M, OUT>(a, N, row, s0v, s1v);
      }
    }
    if (!early_dependents && tile + P * G >= ntiles) grid_dependents_launch();
    parity ^= 1;
  }
  if (tracing()) {
    consumer_sync<W>();
    trace_point(TraceKind::gemv_tma, w.data, N, K, TracePoint::end);
  }
#endif
}

// Tiles per tile-end barrier for format F at batch M: GemvTuning::tma_tile_group (int4:
// tma_tile_group_int4), halved until the partial sums' buffers ([2][W][P][16][M]
// floats) fit in 16 KB.
template <WeightFormat F>
int tma_tiles_per_barrier(int M) {
  const GemvTuning t = gemv_tuning();  // its groups are 1, 2, 4 or 8 (set_gemv_tuning checks)
  int p = F == WeightFormat::int4 ? t.tma_tile_group_int4 : t.tma_tile_group;
  while (p > 1 && tma_red_bytes<F>(M, p) > 16 * 1024) p /= 2;
  return p;
}

// Whether weight w's stage rows are padded (GemvTuning::tma_pad_rows: the kernel's flag 2048).
template <WeightFormat F>
bool tma_pad_rows(const DeviceWeight& w) {
  const GemvTuning t = gemv_tuning();
  constexpr bool kByte = F == WeightFormat::int8 || F == WeightFormat::fp8;
  return ((t.tma_pad_rows >> static_cast<int>(F) & 1) &&
          (F != WeightFormat::int4 || w.k_padded >= t.tma_pad_rows_int4_min_k)) ||
         (kByte && w.k_padded <= t.tma_pad_rows_byte_max_k);
}

// Bytes of shared memory per row chunk and stage count for weight w at batch M; chunk = 0 when
// the TMA kernel does not take it (GemvTuning::tma off, a format or group it does not handle,
// K not a multiple of its segments, or x too large for shared memory next to the ring).
struct TmaPlan {
  int chunk = 0, stages = 0;
  int tiles = 1;  // tiles per tile-end barrier (tma_tiles_per_barrier, or fewer so that x fits)
  size_t smem = 0;
};

template <WeightFormat F>
TmaPlan tma_plan(const DeviceWeight& w, int M) {
  TmaPlan p;
  const GemvTuning tune = gemv_tuning();
  if (!(F == WeightFormat::bf16   ? tune.tma_bf16
        : F == WeightFormat::int8 ? tune.tma_int8
        : F == WeightFormat::fp8  ? tune.tma_fp8
                                  : tune.tma_int4))
    return p;
  // fp8 with dynamic activation quantization keeps the CUDA-core kernel (its x is e4m3).
  if (F == WeightFormat::fp8 && w.act_quant != ActQuant::none) return p;
  // An int4 weight stored at a K the register-ring kernels cannot take (a multiple of 256, not
  // of gemv_k_align(int4) = 1024: gemv_padded_k) has no other kernel: no shape rule, and x may
  // take more of shared memory (batch 8 at K = 3584: 71 KB).
  const bool tma_only = F == WeightFormat::int4 && w.k_padded % gemv_k_align(F) != 0;
  // (int4 at batch 1, on the integer tensor cores, measured faster on every llama3-1b shape; int4
  // in groups of 64 and 32 has only the CUDA-core kernel besides at batches 2-4, lab note 100.)
  if (!tma_only &&
      (((F == WeightFormat::int8 || F == WeightFormat::fp8) && tune.tma_int8_shape_rule) ||
       (F == WeightFormat::int4 && tune.tma_int4_shape_rule && !tma_int4_imma<F>(M) &&
        w.group_size >= 128))) {
    static const int sms = [] {
      int dev = 0, v = 0;
      AO_CUDA_CHECK(cudaGetDevice(&dev));
      AO_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
      return v;
    }();
    if (w.k_padded < 4096 || (w.n + 15) / 16 * 2 < 3 * static_cast<int64_t>(sms)) return p;
  }
  {
    // int4: groups of 128 / 256 at every batch, 64 / 32 at batches 1-4 (the mma's spare columns
    // carry the other groups: tma_int4_groups_per_segment, lab notes 99-100).
    if (F == WeightFormat::int4 && w.group_size != 128 && w.group_size != 256 &&
        !(M <= 4 && (w.group_size == 64 || w.group_size == 32)))
      return p;
    const int gps = F == WeightFormat::int4 ? tma_int4_groups_per_segment(w.group_size) : 1;
    if (F == WeightFormat::int4 && w.k_padded < tune.tma_int4_min_k) return p;
    constexpr int KS = TmaFmt<F>::kSeg;
    const int64_t Kp = w.k_padded;
    if (Kp % 256 != 0 || Kp % KS != 0) return p;
    const int64_t row_bytes = Kp / KS * 64;
    auto x_bytes = [&](int tiles) {
      return tma_x_bytes<F>(M, Kp) + tma_csum_bytes<F>(M, Kp, gps) + tma_red_bytes<F>(M, tiles);
    };
    const size_t x_cap =
        F == WeightFormat::int4 && M >= 2 && M <= 4 ? kTmaInt4BatchMaxX
        : tma_only                                  ? kTmaOnlyMaxX
        : F != WeightFormat::int4 && M >= 2 && M <= 4 ? static_cast<size_t>(tune.tma_batch4_max_x)
        : F != WeightFormat::int4 && M == 8           ? static_cast<size_t>(tune.tma_batch_max_x)
        // int4 at batch 8: where the v7 kernel does not take it (x past its 96 KB), rows of x up to
        // tma_int4_batch8_max_x (lab note 102)
        : F == WeightFormat::int4 && M == 8 && !int4_mma_eligible(w, 8)
            ? static_cast<size_t>(tune.tma_int4_batch8_max_x)
            : 64 * 1024;
    // Fewer tiles per barrier where that lets x fit (GemvTuning::tma_tile_group_fits_x: Qwen2.5-7B's
    // int4 down projection at batch 1, K = 19456, takes 2 instead of 8; lab note 91).
    // bf16 / int8 / fp8 at batches 2-4 with x past GemvTuning::tma_batch_fewer_tiles_x (bf16) or
    // tma_batch_fewer_tiles_x_byte (int8, fp8) take fewer tiles too: the ring keeps its stages
    // (Qwen2.5-7B's down, K = 18944, at batch 4: bf16 64.8 against 114.9 us with 4 tiles; run
    // 314, lab note 101).
    const size_t tile_cap =
        F != WeightFormat::int4 && M >= 2 && M <= 4
            ? std::min(x_cap, static_cast<size_t>(F == WeightFormat::bf16
                                                      ? tune.tma_batch_fewer_tiles_x
                                                      : tune.tma_batch_fewer_tiles_x_byte))
            : x_cap;
    int tiles = tma_tiles_per_barrier<F>(M);
    while (tune.tma_tile_group_fits_x && tiles > 1 && x_bytes(tiles) > tile_cap) tiles /= 2;
    const size_t x = x_bytes(tiles);
    if (x > x_cap) return p;
    static const size_t optin = [] {  // 0 before sm_90: no TMA kernel there
      int dev = 0, v = 0, major = 0;
      AO_CUDA_CHECK(cudaGetDevice(&dev));
      AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
      AO_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
      return major >= 9 ? static_cast<size_t>(v) : size_t(0);
    }();
    if (optin < x + 1024 + tma_barrier_bytes(8) + 16 * 1024) return p;
    // GemvTuning::tma_ring_bytes overrides the target (lab note 48: 144-224 KB measured); the
    // formats that decode default to tma_ring_bytes_decode (lab note 56), int4 to
    // tma_ring_bytes_int4 (lab note 69).
    const size_t target = tune.tma_ring_bytes > 0   ? static_cast<size_t>(tune.tma_ring_bytes)
                          : F == WeightFormat::bf16 ? kTmaRingTarget
                          : F == WeightFormat::int4 && tune.tma_ring_bytes_int4 > 0
                              ? static_cast<size_t>(tune.tma_ring_bytes_int4)
                          : tune.tma_ring_bytes_decode > 0
                              ? static_cast<size_t>(tune.tma_ring_bytes_decode)
                              : kTmaRingTarget;
    const size_t budget = std::min(target, optin - 1024 - x - tma_barrier_bytes(8));
#ifdef AO_GEMV_EXPERIMENTS
    // Lab: AO_TMA_CHUNK forces the bytes per row and stage (a multiple of 512, or with
    // tma_chunk_any_divisor of 64, dividing the row).
    static const int64_t want = [] {
      const char* e = std::getenv("AO_TMA_CHUNK");
      return e ? std::atoll(e) : 0;
    }();
#else
    constexpr int64_t want = 0;
#endif
    // Chunk: whole rows (the tile's weights and scales are then one copy each) or a multiple of
    // 512 bytes dividing the row (one copy per row, and one of the 16 rows' scales for int4). The TMA
    // takes ~75 cycles per bulk copy whatever its size (lab note 23: 512-byte copies stream at
    // 1.7 TB/s, 1 KB at 3.3, 2 KB at 4.4 on the H200), so a stage must average >= 1.5 KB per
    // copy; among those, the most stages (up to 4) in the ring, then the larger chunk. Where no
    // such chunk reaches that rate (a row of 2^k x an odd factor: llama2-7b's K = 11008 has only
    // 512-byte chunks), any multiple of 64 bytes dividing the row, the most bytes per copy first
    // (lab note 87; GemvTuning::tma_chunk_any_divisor).
    const bool pad = tma_pad_rows<F>(w);
    struct Cand {
      int64_t key = -1;
      int stages = 0;
      size_t stage = 0;
      int64_t chunk = 0;
    };
    // A chunk's plan: its stage bytes, stages and key (-1: not taken). Multiples of 512: at rate
    // first, then the most stages (up to 4), then the larger chunk. The second pass (`any`): at
    // rate first, then the most bytes per copy, then the most stages.
    auto plan_of = [&](int64_t ch, bool any) {
      Cand c;
      if (ch < 512 || ch % (any ? 64 : 512) != 0 || row_bytes % ch != 0 ||
          (want != 0 && ch != want))
        return c;
      // int4: whole scale groups per chunk (their copy, 16 rows of 4 bytes each, is a multiple
      // of 16 bytes whatever their count).
      if (F == WeightFormat::int4 && ch * 2 % w.group_size != 0) return c;
      const bool whole = ch == row_bytes;
      const size_t sc = F == WeightFormat::int4
                            ? static_cast<size_t>(ch) * 2 / w.group_size * kInt4ScaleBytes
                            : 0;
      c.stage = 16 * (ch + (pad ? 64 : 0) + sc);
      c.stages = static_cast<int>(std::min<size_t>(budget / c.stage, 8));
      c.chunk = ch;
      // Copies per stage: the weights' (one per row unless whole unpadded rows), int4's scales'
      // (one: the tile-major layout, int4_scale_index).
      const int copies = (whole && !pad ? 1 : 16) + (F == WeightFormat::int4 ? 1 : 0);
      const auto per_copy = static_cast<int64_t>(c.stage / copies);
      const bool rate_ok = per_copy >= 1536;
      if (c.stages < (rate_ok ? 2 : 3)) return c;
      c.key = any ? (int64_t{rate_ok} << 40) + (per_copy << 8) + c.stages
                  : (int64_t{rate_ok} << 40) + std::min(c.stages, 4) * (int64_t{1} << 20) + ch / 64;
      return c;
    };
    Cand best;
    auto take = [&](const Cand& c) {
      if (c.key > best.key) best = c;
    };
    // Whole rows, then 4096, 3584, ..., 512 bytes.
    take(plan_of(row_bytes, false));
    for (int64_t ch = std::min<int64_t>(4096, row_bytes - 512); ch >= 512; ch -= 512)
      take(plan_of(ch, false));
    if (best.key < (int64_t{1} << 40) && tune.tma_chunk_any_divisor) {
      // The incumbent in the second pass's terms; then every multiple of 64 up to 8 KB.
      if (best.key >= 0) best = plan_of(best.chunk, true);
      // Whole rows that are no multiple of 512 (int4 rows of 256-element multiples:
      // gemv_padded_k).
      if (row_bytes % 512 != 0) take(plan_of(row_bytes, true));
      for (int64_t ch = std::min<int64_t>(8192, row_bytes - 64) / 64 * 64; ch >= 512; ch -= 64)
        if (ch % 512 != 0) take(plan_of(ch, true));
    }
    if (best.key >= 0) {
      p.chunk = static_cast<int>(best.chunk);
      p.stages = best.stages;
      p.tiles = tiles;
      p.smem = tma_barrier_bytes(best.stages) + best.stages * best.stage + x;
    }
#ifdef AO_GEMV_EXPERIMENTS
    // Lab: AO_TMA_STAGES caps the ring.
    static const int cap = [] {
      const char* e = std::getenv("AO_TMA_STAGES");
      return e ? std::atoi(e) : 0;
    }();
    if (p.chunk != 0 && cap >= 2 && cap < p.stages) {
      const size_t stage = (p.smem - x - tma_barrier_bytes(p.stages)) / p.stages;
      p.stages = cap;
      p.smem = tma_barrier_bytes(cap) + cap * stage + x;
    }
#endif
    return p;
  }
}
// The kernel's `flags`: 1 = the consumers skip the math (lab AO_TMA_NOCOMPUTE=1: wrong results,
// the weight stream alone, for timing), 2 = the two-pass RMSNorm (lab AO_GEMV_RMS2=1), 4 = int8 /
// int4 x staged as fp16 directly (GemvTuning::tma_direct_fp16, or the lab's AO_TMA_DIRECT=0|1),
// 8 = the RMSNorm weight loaded after the grid-dependency wait (GemvNormFlags::late), 16 = int4
// scales read from the stage's first row for every row (lab AO_TMA_SCALE_BCAST=1: wrong results,
// the timing without the scale loads' bank conflicts), 32 = the weight stream evict-first in L2
// (GemvTuning::tma_evict_first), 64 = the producer marks each stage full without copying it (lab
// AO_TMA_FAKESTREAM=1: wrong results, the consumers' rate without the weight stream), 128 = x
// held in registers where the warp's segments allow (GemvTuning::tma_x_registers), 256 = rows g
// and g + 8 read 64 bytes apart (lab AO_TMA_WCF=1: wrong results, the timing without the weight
// loads' bank conflicts), 512 and 1024 = log2 of the tiles per tile-end barrier
// (GemvTuning::tma_tile_group), 2048 = weight rows padded in the stage (tma_pad_rows). (Bits
// 256 and 1024-4096 once held the decode attention inside the qkv GEMV, removed in lab note 57.)
inline int tma_flags() {
  int f = gemv_tuning().tma_direct_fp16 ? 4 : 0;
  if (gemv_tuning().tma_evict_first) f |= 32;
  if (gemv_tuning().tma_x_registers) f |= 128;
  const int nf = norm_flags();
  if (nf & GemvNormFlags::two_pass) f |= 2;
  if (nf & GemvNormFlags::late) f |= 8;
#ifdef AO_GEMV_EXPERIMENTS
  static const char* nocompute = std::getenv("AO_TMA_NOCOMPUTE");
  if (nocompute && nocompute[0] == '1') f |= 1;
  static const char* bcast = std::getenv("AO_TMA_SCALE_BCAST");  // lab note 37: wrong results
  if (bcast && bcast[0] == '1') f |= 16;
  static const char* fake = std::getenv("AO_TMA_FAKESTREAM");  // wrong results: no weights read
  if (fake && fake[0] == '1') f |= 64;
  static const char* nostage = std::getenv("AO_TMA_NOSTAGE");  // wrong results: no x staged
  if (nostage && nostage[0] == '1') f |= 4096;
  static const char* wcf = std::getenv("AO_TMA_WCF");  // wrong results: no weight conflicts
  if (wcf && wcf[0] == '1') f |= 256;
  static const char* xreg = std::getenv("AO_TMA_XREG");
  if (xreg && xreg[0] == '0') f &= ~128;
  static const char* direct = std::getenv("AO_TMA_DIRECT");
  if (direct) f = (f & ~4) | (direct[0] == '1' ? 4 : 0);
#endif
  return f;
}
// GemvTuning::tma_hold_stages (for a bf16 x: tma_hold_stages_bf16_input, or
// tma_hold_stages_bf16_input_decode for the formats that decode), or the lab's AO_TMA_PRE
// (AO_GEMV_EXPERIMENTS builds; both inputs, every format).
template <WeightFormat F>
int tma_hold_stages(GemvInput in) {
#ifdef AO_GEMV_EXPERIMENTS
  static const char* e = std::getenv("AO_TMA_PRE");
  if (e) return std::atoi(e);
#endif
  const GemvTuning t = gemv_tuning();
  if (in == GemvInput::rmsnorm) return t.tma_hold_stages;  // int4_digits: as a bf16 x
  return F == WeightFormat::bf16 ? t.tma_hold_stages_bf16_input
                                 : t.tma_hold_stages_bf16_input_decode;
}

// Launches the TMA kernel.
template <WeightFormat F, int M, GemvInput IN, GemvOutput OUT>
void launch_tma(const DeviceWeight& w, const GemvArgs& a, const TmaPlan& p, cudaStream_t s) {
  auto kernel = gemv_tma_kernel<F, M, IN, OUT>;
  int ki = 0;  // the instance: groups per segment 1, 2, 4
  if constexpr (F == WeightFormat::int4 && M <= 4 && IN != GemvInput::int4_digits) {
    if (w.group_size == 64) kernel = gemv_tma_kernel<F, M, IN, OUT, 2>, ki = 1;
    if (w.group_size == 32) kernel = gemv_tma_kernel<F, M, IN, OUT, 4>, ki = 2;
  }
  static int sms_of[3] = {};
  static size_t configured[3] = {};
  if (configured[ki] < p.smem) {
    sms_of[ki] = opt_in_shared_memory(kernel, static_cast<int>(p.smem));
    configured[ki] = p.smem;
  }
  const int sms = sms_of[ki];
  const int ntiles = static_cast<int>((w.n + 15) / 16);
  int cap = sms;
  if (a.max_blocks > 0) cap = std::min(cap, a.max_blocks);
  int grid = std::min(ntiles, cap);
  if (gemv_tuning().tma_balanced_grid && grid > 0) {
    const int rounds = (ntiles + grid - 1) / grid;
    grid = (ntiles + rounds - 1) / rounds;
  }
  constexpr int W = tma_warps<F>();
  // x in registers (flag 128) where each consumer warp takes the same 1 or 2 segments of each
  // stage and at most 4 of every tile, at batch 1, for int8 and fp8 (the kernel's kXr).
  int flags = tma_flags();
  const int spc = p.chunk / 64;
  const int64_t chunks = w.k_padded / TmaFmt<F>::kSeg * 64 / p.chunk;
  const bool xreg = (flags & 128) && !(flags & 1) && F != WeightFormat::bf16 && M == 1 &&
                    tma_x_register_segments<F>() > 0 && spc % W == 0 &&
                    (spc / W == 1 || spc / W == 2) &&
                    chunks * (spc / W) <= tma_x_register_segments<F>();
  if (!xreg) flags &= ~128;
  const bool pad = tma_pad_rows<F>(w);
  if (pad) flags |= 2048;
  const int tiles_per_barrier = p.tiles;
  flags |= (tiles_per_barrier == 8   ? 3
            : tiles_per_barrier == 4 ? 2
            : tiles_per_barrier == 2 ? 1
                                     : 0)
           << 9;
  // The fp16-decode formats launch the next kernel late (GemvTuning::tma_fp16_early_dependents),
  // and so do the GEMVs of the outputs in GemvTuning::tma_late_outputs (the qkv GEMV).
  const GemvTuning tune = gemv_tuning();
  const int early = tune.early_dependents &&
                    !(tune.tma_late_outputs >> static_cast<int>(OUT) & 1) &&
                    (F == WeightFormat::bf16 || tune.tma_fp16_early_dependents);
  // bf16: the head of the next GEMV's weight to prefetch into L2
  // (GemvTuning::tma_prefetch_next_bytes): its data's first bytes and the same fraction of its
  // scales, each a multiple of 16 bytes.
  TmaPrefetch pf;
  const int64_t want = tune.tma_prefetch_next_bytes;
  if (F == WeightFormat::bf16 && a.next != nullptr && a.next->data != nullptr && want > 0 &&
      reinterpret_cast<uintptr_t>(a.next->data) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(a.next->scale) % 16 == 0) {
    const DeviceWeight& nx = *a.next;
    const auto scale_total = static_cast<int64_t>(nx.scale_bytes());
    const auto data_total = static_cast<int64_t>(nx.bytes()) - scale_total;
    const double f = std::min(1.0, static_cast<double>(want) / static_cast<double>(nx.bytes()));
    pf.data = static_cast<const uint8_t*>(nx.data);
    pf.data_bytes = static_cast<int64_t>(f * data_total) / 16 * 16;
    if (nx.scale != nullptr) {
      pf.scale = static_cast<const uint8_t*>(nx.scale);
      pf.scale_bytes = static_cast<int64_t>(f * scale_total) / 16 * 16;
    }
  }
  record_gemv_launch(
      GemvLaunch{true, W, 1, grid, true, p.smem, xreg, pad, pf.data_bytes + pf.scale_bytes,
                 p.chunk, p.tiles, M});
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3((W + 1) * 32), p.smem, s, w, a,
             p.chunk, p.stages, early, tma_hold_stages<F>(IN), flags, pf);
}

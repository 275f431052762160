// CUDA kernels of the Llama-family forward: plain launchers over raw device pointers, enqueued
// on a caller's stream. bf16 activations, fp32 accumulation. Fronts (the engine, the tests)
// validate shapes; launchers only check what would make a kernel read out of bounds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ao::cuda {

// Throws ao::Error naming the call and the CUDA error string.
void check(cudaError_t e, const char* call, const char* file, int line);
#define AO_CUDA_CHECK(call) ::ao::cuda::check((call), #call, __FILE__, __LINE__)
// Throws ao::Error with `msg` (usable from .cu files that do not include fmt).
[[noreturn]] void fail(const char* msg);

// ---- weights for GEMV/GEMM ---------------------------------------------------------------
// Weight formats the GEMV kernels read. Rows are padded to `k_padded` elements
// (gemv_padded_k); the padding holds zero weights.
enum class WeightFormat : int {
  bf16 = 0,  // w [N, Kp] bf16
  int8 = 1,  // w [N, Kp] int8, scale [N] f32: deq = q * scale (TorchAO Int8 weight-only)
  int4 = 2,  // w [N, Kp/2] bytes, 8 consecutive k per 32-bit word, element k in nibble k%8
             // (low first), q in [0, 15]; per row and group one 32-bit word of two bf16,
             // s in the low half and zero in the high half (int4_pack_scale; TorchAO stores
             // both in the model's bf16), tile-major (int4_scale_index: [ceil(N/16)][Kp/g][16
             // rows], the rows past N of the last tile zero): deq = (q - 8) * s + zero, computed
             // as q * s + (zero - 8 s) with zero - 8 s in fp32 (TorchAO Int4 semantics)
  fp8 = 3,   // w [N, Kp] e4m3fn, scale [N] f32 (per-tensor: all rows equal): deq = q * scale
};
int gemv_k_align(WeightFormat f);  // elements a row must be padded to
// Index of row `row`, group `grp` in an int4 weight's scale_bias (`groups` per row): tiles of 16
// rows, each [groups][16 rows], so that the TMA GEMV copies a stage's scales in one piece and
// reads them without bank conflicts (docs/CUDA.md lab note 91).
__host__ __device__ inline int64_t int4_scale_index(int64_t row, int64_t grp, int64_t groups) {
  return ((row >> 4) * groups + grp) * 16 + (row & 15);
}
// Rows of an int4 weight's scale_bias: N rounded up to a whole tile of 16.
__host__ __device__ inline int64_t int4_scale_rows(int64_t n) { return (n + 15) / 16 * 16; }
// Bytes of one int4 scale word (per row and group).
inline constexpr int kInt4ScaleBytes = 4;
// One int4 scale word from the bf16 bits of s (low half) and zero (high half).
__host__ __device__ inline uint32_t int4_pack_scale(uint16_t s_bf16, uint16_t zero_bf16) {
  return static_cast<uint32_t>(s_bf16) | static_cast<uint32_t>(zero_bf16) << 16;
}
// The K a weight [n, k] of format f is stored at (its k_padded): k rounded up to
// gemv_k_align(f), except int4 weights that the TMA kernel (sm_90, groups of 128/256) takes at
// every batch 1-8 with rows of a multiple of 256 (GemvTuning::tma_int4_pad_256): those are
// padded to 256 only (Qwen2.5-7B's K = 3584 stays 3584 instead of 4096). gemv() refuses such a
// weight where a later GemvTuning leaves it no TMA plan.
int64_t gemv_padded_k(WeightFormat f, int64_t n, int64_t k, int group_size);

// Dynamic quantization of the activations that multiply an fp8 weight (TorchAO
// Float8DynamicActivationFloat8WeightConfig): x (bf16 values) -> e4m3 codes with
// scale = bf16(amax / 448) per row (token) or per tensor (all rows of the call), see
// quantize_activation_fp8. The product is then (sum_k qa qw) * scale_a * scale_w, as
// torch._scaled_mm computes it.
enum class ActQuant : int { none = 0, fp8_row = 1, fp8_tensor = 2 };

struct DeviceWeight {
  WeightFormat format = WeightFormat::bf16;
  int64_t n = 0, k = 0, k_padded = 0;
  int group_size = 0;  // int4 only
  void* data = nullptr;
  void* scale = nullptr;          // int8/fp8: float[N]; int4: uint32[N/16][Kp/g][16] (bf16 s, zero)
  bool per_tensor_scale = false;  // int8/fp8: all N scales are equal (scale[0] is the tensor's)
  // fp8 only: activations are quantized dynamically before they meet this weight (the GEMV
  // does it on the fly; prefill runs quantize_activation_fp8 + the cuBLASLt FP8 GEMM).
  ActQuant act_quant = ActQuant::none;
  size_t bytes() const;        // bytes read by one GEMV (data + scales)
  size_t scale_bytes() const;  // the scales' part of it (0 for bf16)
};

// What the GEMV computes on its input before the dot products (fused prologue).
enum class GemvInput : int {
  bf16 = 0,     // x [M, K] bf16
  rmsnorm = 1,  // x [M, K] f32 residual; uses rms_weight (bf16 [K]) and eps
  // x already staged for the int4 batch-1 GEMV on the integer tensor cores (the decode
  // attention's int4_digits output, int4_digits_bytes(K) bytes, 16-byte aligned): per 128-k
  // segment three signed base-256 digits of X = rn(x S_seg) in the kernel's shared-memory order,
  // then one float2 {1 / S_seg, sum of X / S_seg} per segment. The kernel copies it to shared memory with the
  // TMA instead of loading and staging x. Batch 1, int4 weights with K = K padded, a multiple of
  // 128, that the TMA kernel takes (gemv_takes_int4_digits); add_residual output only.
  int4_digits = 2,
};
// Bytes of an int4_digits input of K values (K a multiple of 128).
inline size_t int4_digits_bytes(int64_t k) {
  return static_cast<size_t>(k) * 3 + static_cast<size_t>(k / 128) * 8;
}
// What it does with the result (fused epilogue).
enum class GemvOutput : int {
  bf16 = 0,          // y [M, N] bf16
  f32 = 1,           // y [M, N] f32
  add_residual = 2,  // residual [M, N] f32 += result
  swiglu = 3,        // rows interleave gate and up (row 2j = gate j, 2j + 1 = up j):
                     // y [M, N / 2] bf16 = silu(gate) * up
  rope_kv = 4,       // qkv + bias + RoPE, q to q_out, k and v into the caches (see GemvArgs)
};

// RoPE of the Llama family. The qkv input holds, per head, head_dim values; `paired` says the
// rotated pairs are adjacent in the input (rows of the qkv weight permuted so: 2i, 2i+1);
// otherwise they follow `interleaved` (llama2.c: (2i, 2i+1); HF: (i, i + hd/2)), which also
// fixes the order written to q_out and the caches.
struct RopeArgs {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  bool interleaved = false;
  bool paired = false;
  const float* inv_freq = nullptr;  // [head_dim / 2]
  const uint16_t* bias = nullptr;   // [(H + 2 KV) * hd] (output order) or null
  int max_seq = 0;                  // cache capacity
};

struct GemvArgs {
  int m = 1;  // batch 1..8
  GemvInput input = GemvInput::bf16;
  const void* x = nullptr;
  int64_t x_stride = 0;  // elements between rows of x (0 = K)
  const uint16_t* rms_weight = nullptr;
  float eps = 1e-5f;
  GemvOutput output = GemvOutput::bf16;
  void* y = nullptr;  // bf16, f32 or residual f32 [M, N]
  // rope_kv output only: the weight is a qkv projection with paired rows (RopeArgs::paired);
  // rows of batch m are tokens at position *pos + m.
  RopeArgs rope;
  const int32_t* pos = nullptr;
  uint16_t* q_out = nullptr;    // [M, H, hd]
  uint16_t* k_cache = nullptr;  // [KV, max_seq, hd]
  uint16_t* v_cache = nullptr;
  // The weight of the GEMV that runs after this one (the decode step sets it): the TMA kernel's
  // blocks, once their own weight copies have landed, ask the L2 to prefetch the head of it
  // (GemvTuning::tma_prefetch_next_bytes), in the window where this GEMV only computes.
  const DeviceWeight* next = nullptr;
  // The TMA kernel's grid at most this many blocks (0: one per SM, as many as there are tiles;
  // the register-ring kernels ignore it). The decode step sets it for the o projection
  // (GemvTuning::decode_o_blocks, decode_o_spare_sms_int4).
  int max_blocks = 0;
};
// With w.act_quant != none (fp8 weights only) the staged x is replaced by its e4m3 values (scale
// from a pre-pass over all of K, so any K works) and the activation scale is applied with the
// weight scale; ActQuant::fp8_tensor needs a batch of 1, 2, 4 or 8 (one launch sees every row).
void gemv(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);
// Whether gemv() takes GemvInput::int4_digits for weight w under the current GemvTuning.
bool gemv_takes_int4_digits(const DeviceWeight& w);

// Overrides of the GEMV's launch choices, for tests and the kernel lab; process-wide, set before
// launching. Defaults: automatic.
struct GemvTuning {
  // Warps that share one row group, each taking a slice of K (1, 2 or 4; 0 = automatic: split
  // only when the persistent grid's last round of tiles would be less than 70% full). A split
  // the weight's K does not allow is ignored.
  int k_split = 0;
  // int4 with groups of 128/256 on the tensor cores where x fits shared memory (false: the
  // CUDA-core kernel).
  bool tensor_cores = true;
  // When a GEMV lets the next kernel launch (programmatic dependent launch): at its start
  // (true), so the next kernel's blocks take the SMs its finished blocks free and issue their
  // first weight loads during its tail; or in its last tile (false, the rule before session 5).
  bool early_dependents = true;
  // The same for the TMA kernel with an fp16 decode (int8, fp8 weight-only, int4 on it): false
  // (the default) lets the next kernel launch only once the block's producer has issued its last
  // copy. Measured (docs/CUDA.md lab note 43, run 74, same engine): llama3-8b int8 418.1 -> 442.5
  // tok/s, fp8-row 426.0 -> 443.6, llama3-1b int8 1543.9 -> 1610.2; with the early launch the
  // qkv GEMV's blocks start ~6 us before the previous kernel ends and their prologue takes 4.5 us
  // instead of 2.5. bf16 on the TMA kernel and the register-ring kernels keep early_dependents
  // (bf16's qkv GEMV excepted: tma_late_outputs below).
  bool tma_fp16_early_dependents = false;
  // TMA GEMVs whose output kind is in this mask (bit 1 << GemvOutput) launch the next kernel
  // late whatever the format: by default the qkv GEMV (rope_kv), whose early launch puts the
  // attention's blocks beside its own while it runs. Measured (docs/CUDA.md lab note 50, runs
  // 90-91, same engine): bf16 llama3-8b 275.6 vs 274.5 tok/s, llama3-1b 1288.4 vs 1278.8; int8
  // with qkv launching early 428.7 vs 436.8 (int8 and fp8 launch late everywhere anyway).
  int tma_late_outputs = 1 << static_cast<int>(GemvOutput::rope_kv);
  // Formats on the TMA kernel (gemv_tma.cuh: a producer warp streams the weights through a
  // ring of shared-memory stages into tensor-core consumers) where x fits shared memory next to
  // the ring, on sm_90; otherwise the register-ring kernels above. On by default for bf16, for
  // int8 (fp16 decode; shapes: tma_int8_shape_rule below) and for int4 with groups of 128/256 on
  // the shapes of tma_int4_shape_rule (docs/CUDA.md lab note 59).
  bool tma_bf16 = true, tma_int8 = true, tma_int4 = true;
  // fp8 weight-only (e4m3, per-row or per-tensor scale) on the TMA kernel with the int8 layout
  // and an fp16 decode (one PRMT and two cvt per 4 weights), under int8's shape rule below
  // where that is on.
  bool tma_fp8 = true;
  // true: int8 (and fp8) take the TMA kernel only where K >= 4096 and there are at least 1.5
  // tiles of 16 rows per SM (every llama3-8b matrix), the shapes where int8 measured faster on it
  // in lab note 27. Off since the TMA kernel's evict-first copies (lab note 40): llama3-1b's
  // shapes then measured faster on it too (int8 1537 -> 1572 tok/s, fp8-row 1554 -> 1564).
  bool tma_int8_shape_rule = false;
  // With tma_int4: only the int4 weights with K >= this take the TMA kernel (0: every shape).
  int tma_int4_min_k = 0;
  // With tma_int4: int4 takes the TMA kernel only on the shapes of the int8 shape rule (K >= 4096
  // and at least 1.5 tiles of 16 rows per SM: every llama3-8b matrix, no llama3-1b one). Measured
  // (docs/CUDA.md lab note 59, run 139, same engine, tg128, g128): llama3-8b 584.4 tok/s with
  // int4 on the TMA kernel where K >= 4096 against 560.1 on the register ring (every shape on
  // it: 584.8); llama3-1b 2140.5 on the register ring against 1919.0 with every shape on the TMA
  // kernel and 2121.9 with its K = 8192 down projection (128 tiles) on it. Batch 1 is exempt
  // since int4 there runs on the integer tensor cores (lab note 70): llama3-1b 2209.0 tok/s
  // with every shape on the TMA kernel against 2163.1 under the rule (run 198, one engine).
  bool tma_int4_shape_rule = true;
  // gemv_padded_k: int4 weights the TMA kernel takes at every batch 1-8 are padded to a multiple
  // of 256 elements, not 1024 (read when a weight is made; false: 1024 everywhere, the layout
  // before). docs/CUDA.md lab note 90.
  bool tma_int4_pad_256 = true;
  // Where x (with the tile-end partial sums) passes its shared-memory limit beside the ring, the
  // TMA plan halves the tiles per tile-end barrier until it fits (Qwen2.5-7B's int4 down
  // projection at batch 1: 2 instead of 8) rather than leaving the weight to the register ring.
  // docs/CUDA.md lab note 91.
  bool tma_tile_group_fits_x = true;
  // Stages of its ring the TMA kernel's producer issues at the block's start; the rest wait
  // until every consumer warp has issued its x loads after the grid-dependency wait, so those
  // loads do not queue behind them (docs/CUDA.md lab note 28). 0: the whole ring at once; -1:
  // nothing before the x loads.
  int tma_hold_stages = 3;
  // The same for the GEMVs whose x is bf16 (the o and down projections; the setting above is
  // for the RMSNorm input). The o projection follows the attention kernel, which leaves most
  // SMs free: its blocks start early and can fill their whole ring while they wait.
  int tma_hold_stages_bf16_input = 3;
  // The same for the formats that decode (int8, fp8, int4 on the TMA kernel) with a bf16 x: 1
  // stage. Measured (docs/CUDA.md lab note 55, run 110, same engine, tg128, 1 vs 3): llama3-8b
  // int8 449.7 vs 437.1 tok/s, fp8-row 447.7 vs 438.0; llama3-1b int8 1608.5 vs 1584.7, fp8-row
  // 1608.3 vs 1588.3 (bf16 weights lose with 1: 264.5 vs 269.0, run 109, so they keep 3).
  int tma_hold_stages_bf16_input_decode = 1;
  // int8/fp8/int4 on the TMA kernel: take each row's fp16 scale in the one-pass prologue, before
  // staging, and stage x as fp16 directly instead of as bf16 followed by a conversion pass and
  // its barriers (the same values; docs/CUDA.md lab note 32). Measured faster (run 51: llama3-8b
  // int8 tg128 404.5 -> 416.2 tok/s, same call; lab note 33).
  bool tma_direct_fp16 = true;
  // The fused RMSNorm's weight (a constant) loaded before the grid-dependency wait, with the
  // first weight loads, instead of beside x after it (docs/CUDA.md lab note 33). false: after.
  bool norm_weight_before_wait = true;
  // The TMA kernel's weight copies under an L2 evict-first policy: weights are read once per
  // step, so L2 keeps what is read again (activations, the KV cache, norm weights, the other
  // kernels' scales). Measured faster (docs/CUDA.md lab note 40, run 65, same engine: llama3-8b
  // int8 414.4 -> 427.2 tok/s, bf16 267.4 -> 271.4, fp8-row 419.1 -> 429.0). false: the default
  // policy. (The register-ring kernels' loads
  // measured no gain from it and stay on the default policy.)
  bool tma_evict_first = true;
  // Bytes of weights the TMA kernel's ring may hold per block, every format (0: 176 KB for bf16,
  // tma_ring_bytes_decode below for the formats that decode), within what the
  // block's shared memory leaves beside x; the plan then picks the stages as before. Measured
  // (docs/CUDA.md lab note 48, run 84, llama3-8b): 192-224 KB slower for int8, bf16 and fp8
  // (int8 432.7 vs 437.1 tok/s), 144 KB within 0.3% for int8 and fp8 and 1% slower for bf16.
  int tma_ring_bytes = 0;
  // The ring's size for the formats that decode (int8, fp8, int4 on the TMA kernel) where
  // tma_ring_bytes is 0: 144 KB (4 stages of 32 KB at K = 4096; bf16 keeps 176 KB, 5 stages).
  // Measured after x in registers and the 1-stage hold (docs/CUDA.md lab note 56, run 114, same
  // engine, tg128, 144 vs 176 KB): llama3-8b int8 457.1 vs 454.1 tok/s, fp8-row 455.9 vs 450.9;
  // llama3-1b int8 1645.2 vs 1609.8, fp8-row 1649.1 vs 1609.4 (128 KB alike; 96-112 KB slower).
  int tma_ring_bytes_decode = 144 * 1024;
  // int4's ring where tma_ring_bytes is 0 (0: tma_ring_bytes_decode). Re-measured after lab note
  // 68's change to int4's kernel (docs/CUDA.md lab note 69, run 189, llama3-8b int4 g128 tg128,
  // one engine, two rounds of 5): 160 KB 692.5 / 692.6 tok/s, 176 KB 692.5 / 692.8, 192 KB 690.0
  // / 690.2, against 689.9 / 690.0 at 144 KB; int8 and fp8 were slower at 160 KB (485.5 -> 482.2,
  // 485.3 -> 482.5) and keep tma_ring_bytes_decode. Run 190: 694.2 against 691.7. Since lab note
  // 92's bf16 scales (run 277, `--ab`, tg128 g128 / g256): 144 KB qwen2.5-7b 664.7 / 674.8
  // against 655.4 / 650.9 at 160, llama2-7b 768.5 / 775.0 against 768.6 / 774.8, llama3-8b
  // 746.6 / 751.4 against 745.9 / 751.3; 128 KB lower on llama (743.2, 753.7).
  int tma_ring_bytes_int4 = 144 * 1024;
  // int8/fp8/int4 on the TMA kernel at batch 1: where every consumer warp takes the same 1 or 2
  // segments of each stage and at most 4 (int4: 2) of each tile (K <= 4096), it holds their x
  // operands and x sums in registers, loaded once after the prologue, instead of reading them
  // from shared memory in every tile (docs/CUDA.md lab note 53: the consumers alone stream
  // gate_up 1.2x faster; run 104, same engine, tg128: llama3-8b int8 436.3 vs 430.9 tok/s,
  // fp8-row 437.0 vs 434.5, llama3-1b int8 1571.1 vs 1550.5, fp8-row 1579.0 vs 1567.3). false:
  // from shared memory, as for the other shapes.
  bool tma_x_registers = true;
  // Tiles of a block per tile-end barrier and epilogue on the TMA kernel: 1, 2, 4 or 8
  // (set_gemv_tuning refuses other values), fewer where their partial sums would pass 16 KB of
  // shared memory. The block's tiles tile, tile + grid, ... meet once, and 16 threads per tile
  // run their epilogues at once (docs/CUDA.md lab note 61).
  int tma_tile_group = 4;
  int tma_tile_group_int4 = 8;  // the same for int4
  // The TMA kernel's stage rows padded by 64 bytes, one copy per row, for the formats whose bit
  // (1 << WeightFormat) is set: rows a multiple of 128 bytes apart put a quarter-warp's 16-byte
  // weight loads in 2-way bank conflicts. Measured (docs/CUDA.md lab note 62, run 152, llama3-8b
  // tg128, same engine): int4 g128 664.4 vs 632.5 tok/s, g256 670.0 vs 650.2; int8 457.3 vs
  // 482.1 and fp8-row 460.5 vs 481.7 (slower), llama3-1b int8 1995.0 vs 1895.5. Default: int4.
  int tma_pad_rows = 1 << static_cast<int>(WeightFormat::int4);
  // Besides the formats of tma_pad_rows: int8 and fp8 stage rows padded where K is at most this
  // (0: never). Lab note 63 (each GEMV alone, H200): padded, llama3-1b's K = 2048 GEMVs ran
  // faster (int8 gate_up 9.5 against 11.2 us, lm_head 58.9 against 61.3; a 4096 x 2048 4.4
  // against 5.0), llama3-8b's K = 4096 ones slower (gate_up 29.7 against 28.1, lm_head 140.6
  // against 117.7); llama3-1b tg128 int8 1998 against 1901 tok/s, fp8-row 2005 against 1898.
  int64_t tma_pad_rows_byte_max_k = 2048;
  // int4's stage rows (where tma_pad_rows sets its bit) padded only where K is at least this.
  // Measured (docs/CUDA.md lab note 71, tg128, one engine each): run 200, every int4 row
  // unpadded: llama3-1b 2454.4 tok/s against 2201.4 padded, llama3-8b (K = 4096, 14336) 661.0
  // against 716.3; run 201, padded where K >= 4096: llama3-1b 2519.0 (its down projection,
  // K = 8192, padded) against 2194.4 padded everywhere and 2457.3 nowhere, llama3-8b 715.2
  // against 715.6. At K = 2048 a whole-row stage is one 16 KB copy unpadded, 32 row and scale
  // copies of ~0.6 KB padded.
  int64_t tma_pad_rows_int4_min_k = 4096;
  // bf16 weights on the TMA kernel: bytes of the next GEMV's weight (GemvArgs::next: its first
  // rows and the same fraction of its scales, the tiles its blocks take first) that the blocks
  // ask the L2 to prefetch, each an equal share, once their own weight copies have landed (0:
  // none). The formats that decode have no prefetch: they measured slower with it at every size
  // (int4 669.4 -> 660.0 tok/s at 4 MB, int8 487.8 -> 466.5 at 8 MB; their consumers, not the
  // stream, set the pace after the prologue, and the prefetch's traffic delays the next GEMV's x
  // loads), and its code alone changed their kernels' registers. Measured (docs/CUDA.md lab note
  // 67, runs 174-176, tg128, same engine): bf16 4 MB llama3-8b 274.8 -> 278.0 tok/s, llama3-1b
  // 1371.5 -> 1398.2 (2-8 MB +0.6-1.5%, 16 MB slower).
  int64_t tma_prefetch_next_bytes = 4 << 20;
  // The TMA kernel's stage chunk may be any multiple of 64 bytes dividing the row where no
  // multiple of 512 streams at rate (>= 1.5 KB per copy): rows of 2^k times an odd factor, such
  // as llama2-7b's K = 11008 (docs/CUDA.md lab note 87). false: multiples of 512 only.
  bool tma_chunk_any_divisor = true;
  // The TMA kernel's grid: one block per SM up to the tiles (false), or the fewest blocks that
  // take the same rounds of tiles (true: 256 tiles on 132 SMs run on 128 blocks of 2), which
  // leaves the rest of the SMs to the next kernel's blocks from the start.
  bool tma_balanced_grid = false;
  // The decode step's o projection on at most this many blocks (GemvArgs::max_blocks; 0: all,
  // or decode_o_spare_sms_int4 below), so that the blocks of the gate_up GEMV after it find SMs
  // free and start streaming early.
  int decode_o_blocks = 0;
  // Where decode_o_blocks is 0: an int4 o projection that takes the attention's digits runs on
  // this many blocks fewer than the SMs (0: all). Measured (docs/CUDA.md lab note 88, tg128, one
  // engine): llama3-8b int4 g128 736.4 against 732.2 tok/s (and 726.0 against 720.8 on another
  // card), llama2-7b 753.6 against 746.5, llama3-1b 2559 against 2557; int8 and bf16, whose o
  // follows the attention with a bf16 x, were slower with it (llama3-8b int8 485.8 against 491.3
  // at 104 blocks) and keep every SM.
  int decode_o_spare_sms_int4 = 20;
  // Bytes of x (with its sums and partial sums) the TMA kernel stages beside its ring for bf16,
  // int8 and fp8 at batch 8 (at batch 1: 64 KB; batches 2-4: tma_batch4_max_x; int4 at batches
  // 2-4: 144 KB, kTmaInt4BatchMaxX). Past it batch 8 runs as 4 + 4 (tma_split_batch8) or on the
  // register-ring kernels, 3-8x slower: at the former 64 KB every batch-8 GEMV of llama3-8b left
  // the TMA kernel (bf16 qkv 94.3 against 19.2 us, lm_head 1873 against 244; int8 / fp8 alike).
  // Run 313, docs/CUDA.md lab note 101. 160 KB rather than 144 since run 319 (lab note 102): int8
  // / fp8 at K = 8192 (148 KB with the x sums and partial sums) ran as 4 + 4 (llama3-70b lm_head
  // 480 against 290-309 us, qkv 57 against 41; llama3-1b down 20.9 against 16.7).
  int tma_batch_max_x = 160 * 1024;
  // The same bound at batches 2-4 (bf16, int8, fp8), where the alternative to the TMA kernel is
  // the register-ring kernel rather than two launches of 4 rows (llama3-8b's down at batch 4, K =
  // 14336, was there at the former 64 KB: bf16 97.5 against 30.9 us); past 144 KB the plan takes
  // fewer tiles per barrier so that the ring keeps its stages. Qwen2.5-7B's down (K = 18944) at
  // batch 4: bf16 / int8 / fp8 64.8 / 60.8 / 61.1 us against 126.4 / 126.5 / 110.7 at 144 KB (run
  // 314).
  int tma_batch4_max_x = 192 * 1024;
  // The same bound for int4 at batch 8 where the v7 tensor-core kernel does not take it (its x
  // within 96 KB; where it does, v7 keeps batch 8 and the TMA kernel only x within 64 KB); the
  // alternative is 4 + 4. llama3-70b (K = 8192) at batch 8: gate_up 118.9 against 164.6 us as 4 +
  // 4, lm_head 210.4 against 323.0; at K = 4096, where v7 takes batch 8, the TMA kernel was faster
  // on some GEMVs and slower on others (llama3-8b o 15.7 against 12.5 us; pp8 -1.8%). Run 319,
  // docs/CUDA.md lab note 102.
  int tma_int4_batch8_max_x = 144 * 1024;
  // ... and x beyond this many bytes there halves the tiles per tile-end barrier until it fits, or
  // one is left (each tile's partial sums take shared memory beside x: 4 tiles at batch 4, 16 KB).
  // bf16's bound; int8 and fp8 take tma_batch_fewer_tiles_x_byte. At 64-112 KB bf16's down of
  // llama3-8b ran 2% slower at batch 8 (run 315, docs/CUDA.md lab note 101).
  int tma_batch_fewer_tiles_x = 144 * 1024;
  // The same bound for the one-byte formats (int8, fp8): llama3-8b's down (K = 14336, 112 KB of x
  // at batch 4) ran 7% faster at batches 4 and 8 with one tile per barrier (run 315, lab notes
  // 101-102).
  int tma_batch_fewer_tiles_x_byte = 64 * 1024;
  // Formats (a mask of WeightFormat bits) whose batch 8 runs as two launches of 4 rows where batch
  // 8 itself would run on neither the TMA kernel nor int4's v7 tensor-core kernel (x too large, or
  // int4 in groups of 64 / 32) and batch 4 runs on one of them (or splits in turn): the
  // weight is read twice, and still, for int4, in about a third of the CUDA-core kernel's time
  // (docs/CUDA.md lab note 100); bf16 / int8 / fp8 down of llama3-8b (x of 224 KB at batch 8):
  // 61.8 / 49.7 / 48.9 us against 187.6 / 192.0 / 165.8 (run 313, lab note 101). Never for rope_kv
  // outputs (their rows are one launch's positions), int4_digits inputs or per-tensor fp8
  // activations (one scale over all 8 rows).
  int tma_split_batch8 = 15;
  // The same at batch 4 (a mask of WeightFormat bits): batch 4 runs as two launches of 2 rows
  // where batch 4 itself would run on neither the TMA kernel nor int4's v7 kernel and batch 2 runs
  // on one of them: rows of x past tma_batch4_max_x (bf16 / int8 / fp8) or kTmaInt4BatchMaxX (int4),
  // such as llama3-70b's down projection (K = 28672: 224 KB of x at batch 4). Batch 8 then runs as
  // 4 + 4 with each half as 2 + 2 where batch 8's own plan fails too. The same exceptions as
  // tma_split_batch8. docs/CUDA.md lab note 102.
  int tma_split_batch4 = 15;
};
void set_gemv_tuning(const GemvTuning& t);
GemvTuning gemv_tuning();
// What the last gemv() call launched, process-wide like GemvTuning (tests assert that a tuning
// took effect): the int4 tensor-core kernel or a CUDA-core one, its warps per block, the warps
// per row group's K split (1 for the tensor-core kernel, which splits K across the whole block)
// and its grid. A batch that is not a power of two launches twice; this is the second launch.
struct GemvLaunch {
  bool tensor_cores = false;
  int warps = 0, k_split = 0, grid = 0;
  bool tma = false;          // the TMA kernel (tensor_cores is then true as well)
  size_t smem = 0;           // the TMA kernel's dynamic shared memory per block (ring, x, sums)
  bool x_registers = false;  // the TMA kernel held x in registers (GemvTuning::tma_x_registers)
  bool padded_rows = false;  // the TMA kernel's stage rows padded (GemvTuning::tma_pad_rows*)
  // Bytes of GemvArgs::next (data + scales) the TMA kernel's blocks prefetch into L2 in all
  // (GemvTuning::tma_prefetch_next_bytes; bf16 only).
  int64_t prefetch_bytes = 0;
  int chunk = 0;  // the TMA kernel's bytes per weight row and stage (its plan)
  int tiles_per_barrier = 0;  // the TMA kernel's tiles per tile-end barrier (its plan)
  int rows = 0;  // the TMA or v7 kernel's batch rows (a split batch launches its halves)
};
GemvLaunch last_gemv_launch();

// ---- kernel timeline tracing (kernel lab) ----------------------------------------------
// Builds with -DAO_KERNEL_TRACE (the lab's, bench/kernels) let thread 0 of every block of the
// decode-step kernels record %globaltimer at the points below into a device buffer; elsewhere
// set_kernel_trace throws. bench_cuda_decode --trace lays one decode step out from them.
enum class TraceKind : uint16_t {
  gemv = 1,
  gemv_int4_mma = 2,
  attention = 3,
  embedding = 4,
  sample = 5,
  gemv_tma = 6
};
// x_landed: thread 0's first x loads after the wait are in its registers; staged: thread 0 has
// staged its share of x (before the block's barriers and the fp16 conversion); x_last: the last
// of the block's consumer warps to have its first x loads in registers (lane 0 of each warp
// stamps the time, the block keeps the latest; written at the prologue's end). TMA kernel only.
enum class TracePoint : uint8_t {
  start = 0,  // first: reserves the block's kTraceSlots events (trace.cuh)
  wait_done = 1,
  prologue_done = 2,
  end = 3,
  rms_done = 4,
  x_landed = 5,
  staged = 6,
  x_last = 7
};
constexpr unsigned kTraceSlots = 8;  // events per block, one per TracePoint
struct KernelTraceEvent {
  uint64_t time_ns;  // %globaltimer
  uint64_t tag;      // the kernel's weight (GEMV) or K-cache (attention) pointer
  uint32_t block, n, k;
  uint16_t kind;
  uint8_t point, sm;
};
struct KernelTraceBuffer {
  unsigned count, capacity;
  KernelTraceEvent events[1];  // [capacity]
};
// `buf` (device memory, count = 0 and capacity set) or nullptr to stop.
void set_kernel_trace(KernelTraceBuffer* buf);
bool kernel_trace_available();

// Quantize a bf16 device weight [N, K] (row stride K) into a padded device weight (TorchAO
// numerics, see NUMERICS.md). `dst` must have format, n, k, k_padded, group_size, data and
// scale set and allocated. For fp8, per_tensor_amax (device float, may be null = per row).
void quantize_weight(const uint16_t* w_bf16, DeviceWeight& dst, bool fp8_per_tensor,
                     float* scratch_amax, cudaStream_t s);
// Dequantize into bf16 [N, Kp] (for prefill GEMMs through cuBLAS).
void dequantize_weight(const DeviceWeight& w, uint16_t* out_bf16, cudaStream_t s);
// Rows [row0, row0 + rows) of it into bf16 [rows, Kp] (DequantGemm's chunks).
void dequantize_weight_rows(const DeviceWeight& w, int64_t row0, int64_t rows, uint16_t* out_bf16,
                            cudaStream_t s);
// An int4 weight's scales as the fused prefill GEMM reads them (mixed_input_gemm.h): bf16 planes
// s [Kp/g][ld] and z [Kp/g][ld] (rows fastest, the rows past N zero), z = bf16(zero - 8 s)
// (rounded to nearest even from the fp32 value the GEMVs use), so that (u - 8) s + zero =
// u s + z. `ld` >= N.
void int4_scale_planes(const DeviceWeight& w, uint16_t* s_plane, uint16_t* z_plane, int64_t ld,
                       cudaStream_t s);
// An int8 or fp8 weight's per-row f32 scales as bf16 (rounded to nearest even), plane[0..ld)
// (the rows past N zero), for the same GEMM. `ld` >= N.
void row_scale_plane(const DeviceWeight& w, uint16_t* plane, int64_t ld, cudaStream_t s);

// Dynamic fp8 e4m3 quantization of bf16 activations x [M, K] (row stride x_stride), TorchAO
// numerics (Float8Tensor.from_hp: _choose_scale_float8 + _quantize_affine_float8, bf16 input):
// scale = bf16(amax / 448) as f32, q = e4m3(clamp(x / scale, +-448)) rounded to nearest even.
// Writes q [M, q_stride] (columns K .. q_stride - 1 zero) and scale [M] (fp8_tensor: M equal
// values, the amax over all M rows). A block of zeros gets scale 0 and codes +-0 (TorchAO
// would divide 0 / 0 and produce NaN codes). fp8_tensor needs `workspace` of M floats.
void quantize_activation_fp8(const uint16_t* x, int64_t x_stride, int m, int64_t k, ActQuant mode,
                             uint8_t* q, int64_t q_stride, float* scale, float* workspace,
                             cudaStream_t s);

// ---- elementwise -------------------------------------------------------------------------
// y [M, N] bf16 = d [M, N] f32 * row_scale[m] * col_scale[n]: the FP8 GEMM's scales applied
// after an unscaled cuBLASLt GEMM (Fp8Gemm's fallback path).
void apply_outer_scales(const float* d, int m, int64_t n, const float* row_scale,
                        const float* col_scale, uint16_t* y, cudaStream_t s);
// Any of f32/f16/bf16 (dtype code: 0 f32, 1 f16, 2 bf16) -> bf16, row stride change allowed.
void convert_to_bf16(const void* src, int src_dtype, uint16_t* dst, int64_t rows, int64_t cols,
                     int64_t dst_stride, cudaStream_t s);
// dst[i] = f32(src[i]) for i < n (bf16 -> f32).
void bf16_to_f32(const uint16_t* src, int64_t n, float* dst, cudaStream_t s);
// dst[r, :] = src[perm[r], :] for r < rows (bf16, `cols` per row).
void gather_rows(const uint16_t* src, const int32_t* perm, int64_t rows, int64_t cols,
                 uint16_t* dst, cudaStream_t s);
// Uniform random bf16 in [-a, a] from a counter-based hash (seed, index).
void fill_random_bf16(uint16_t* dst, int64_t n, float a, uint64_t seed, cudaStream_t s);
void fill_bf16(uint16_t* dst, int64_t n, float v, cudaStream_t s);

// residual[m, :] = f32(embed[tokens[m], :]) for m < M.
void embedding(const uint16_t* embed, const int32_t* tokens, int m, int dim, float* residual,
               cudaStream_t s);
// If delta: residual += delta (bf16). Then out = bf16(rmsnorm(residual) * weight). [M, dim].
void add_rmsnorm(float* residual, const uint16_t* delta, const uint16_t* weight, float eps, int m,
                 int dim, uint16_t* out, cudaStream_t s);
// out[m, j] = silu(gu[m, 2j]) * gu[m, 2j + 1] (bf16; gate and up interleaved as the
// gate_up weight's rows are).
void swiglu(const uint16_t* gate_up, int m, int hidden, uint16_t* out, cudaStream_t s);

// qkv [M, (H + 2 KV) hd] bf16 (rows are tokens at positions *pos + m). Adds bias, rotates q and
// k, writes q to q_out [M, H, hd] and k, v into the layer's cache [KV, max_seq, hd].
void rope_kv_append(const uint16_t* qkv, int m, const int32_t* pos, const RopeArgs& a,
                    uint16_t* q_out, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t s);

// ---- attention ---------------------------------------------------------------------------
struct AttentionArgs {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, max_seq = 0;
  float scale = 0.f;
};
// Decode, one token at position *pos (attends to 0..*pos): split-KV flash decoding; the last
// block of each KV head to finish merges the chunks. workspace: attention_decode_workspace()
// bytes, zeroed once before first use (the kernel leaves its counters at zero). Launched as a
// programmatic dependent of the previous kernel (the qkv GEMV), it reads *pos and the cache rows
// before *pos ahead of its grid-dependency wait: only q and row *pos may come from that kernel
// (the decode step's position is written by the previous step, whose kernels all complete before
// the next step's first kernel, launched without the attribute, starts).
size_t attention_decode_workspace(const AttentionArgs& a);
// With int4_digits (int4_digits_bytes(n_heads * head_dim) bytes, 16-byte aligned), the kernel
// also writes out as GemvInput::int4_digits for the o projection, one scale per 128-k segment
// (S_seg puts the segment's max |out| in [2^21, 2^22), at most 2^126; a non-finite segment gets
// a NaN 1 / S_seg): needs attention_decode_writes_int4_digits(a).
void attention_decode(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                      const int32_t* pos, const AttentionArgs& a, void* workspace, uint16_t* out,
                      cudaStream_t s, uint8_t* int4_digits = nullptr);
bool attention_decode_writes_int4_digits(const AttentionArgs& a);
// Lab setting of the decode attention, process-wide like GemvTuning: loads_before_wait = false
// waits for the previous kernel before reading the position and the cache (the order until
// docs/CUDA.md lab note 34), for A/B runs.
struct AttentionTuning {
  bool loads_before_wait = true;
  // Blocks per KV head, each taking 1 / head_blocks of its query heads (4, 2 or 1: the largest
  // that divides them and is at most this): a warp's serial math after the wait is that much
  // shorter. Measured (docs/CUDA.md lab note 58, run 135, same engine, tg128, 4 vs 1): llama3-8b
  // int8 479.0 vs 466.0 tok/s, fp8-row 477.5 vs 465.4, bf16 280.0 vs 277.3; llama3-1b int8
  // 1844.6 vs 1780.6, bf16 1380.2 vs 1353.8.
  int head_blocks = 4;
  // The decode step's int4 o projection takes its x from the attention as int4 digits
  // (GemvInput::int4_digits) where both kernels allow it, instead of staging the bf16 output in
  // its own prologue (docs/CUDA.md lab note 86).
  bool o_digits = true;
};
void set_attention_tuning(const AttentionTuning& t);
AttentionTuning attention_tuning();
// Prefill: M query tokens at positions *pos .. *pos + M - 1, causal over the cache.
void attention_prefill(const uint16_t* q, int m, const uint16_t* k_cache, const uint16_t* v_cache,
                       const int32_t* pos, const AttentionArgs& a, uint16_t* out, cudaStream_t s);

// ---- sampling ----------------------------------------------------------------------------
struct SamplerState {  // lives in device memory
  float temperature;   // <= 0: greedy
  int top_k;           // <= 0: off
  float top_p;         // >= 1: off
  uint32_t pad;
  uint64_t seed;
  uint64_t step;  // incremented by every sample
  // Greedy sampling's scratch (zero between samples; the kernel leaves them so): the best
  // (logit, index) key so far over the grid's blocks, and the blocks done.
  unsigned long long best_key = 0;
  uint32_t blocks_done = 0;
  uint32_t pad2 = 0;
};
// Picks the next token from logits [vocab] f32; writes it to *token and, when out_tokens is
// not null, to out_tokens[*n_out % out_capacity] (then ++*n_out); ++*pos when advance_pos.
void sample(const float* logits, int vocab, SamplerState* state, int32_t* token,
            int32_t* out_tokens, int out_capacity, int32_t* n_out, int32_t* pos, int advance_pos,
            cudaStream_t s);

}  // namespace ao::cuda

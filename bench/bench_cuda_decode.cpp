// llama-bench-style CUDA benchmark over synthetic model shapes (random weights made on the
// device): prints the card's measured ceilings, then a markdown table and JSON lines.
//   bench_cuda_decode [--models llama3-8b,llama3-1b] [--formats bf16,int8wo,int4wo-g128]
//                     (formats: bf16, int8wo, int4wo-gN, fp8-row, fp8-tensor, fp8dq-row,
//                     fp8dq-tensor)
//                     [--pp 512] [--tg 128] [--reps 3] [--ubatch 512] [--json FILE] [--kernels]
//                     [--kernel-reps 50] [--kernel-m1] [--kernel-model llama3-8b]
//                     [--trace POS] [--ab VARIANTS] [--prefill-gemms]
// Environment (lab): AO_GEMV_KSPLIT=1|2|4 forces the GEMV's K split, AO_GEMV_MMA=0 the CUDA-core
// int4 kernel, AO_GEMV_EARLY=0 the next kernel's launch in each GEMV's last tile instead of at
// its start, AO_GEMV_TMA=0 the register-ring GEMVs for bf16 too, AO_GEMV_TMA=all the TMA GEMV for
// int8, int4 and fp8 as well, AO_GEMV_TMA=int8|int4|fp8 for that one (ao::cuda::set_gemv_tuning).
// --trace POS (lab build only: -DAO_KERNEL_TRACE): for each model, format and --ab variant, a
// timeline of decode steps at position POS from the kernels' own %globaltimer stamps — per kernel
// class, the time it adds to the step, how long after the previous kernel it passes its
// grid-dependency wait, its prologue, its streaming phase and its tail (first to last block end).
// --kernels adds a per-kernel table (each decode kernel of the llama3-8b shape timed alone, the
// GEMVs and the decode attention under each --ab variant's tuning; --formats none leaves out the
// GEMVs; --kernel-model llama3-1b, llama2-7b, qwen2.5-7b or llama3-70b takes that model's GEMV shapes); --models none
// skips the whole-model runs. --prefill-gemms adds a table of the model's prefill GEMMs (M = --pp
// rows, 512 without it) of each quantized format through DequantGemm, under each --ab variant,
// against cuBLAS on the same weight in bf16.
// --ab base,direct,latenorm (GemvTuning variants, modifiers joined by '+': direct, nodirect,
// latenorm, hold=N (both inputs), holdrms=N, holdbf16=N (bf16 x, every format), holdbf16dec=N
// (bf16 x, the formats that decode: GemvTuning::tma_hold_stages_bf16_input_decode), tma-int4
// (every shape), tma-int4-k>=N, no-tma-int4, int4-shape-rule / no-int4-shape-rule
// (GemvTuning::tma_int4_shape_rule), no-tma-int8, no-tma-fp8, shape-rule / no-shape-rule
// (GemvTuning::tma_int8_shape_rule), evict-first / no-evict-first (GemvTuning::tma_evict_first),
// tma-f16-early (tma_fp16_early_dependents), late (early_dependents off), late-out=MASK
// (GemvTuning::tma_late_outputs), ring=KB (GemvTuning::tma_ring_bytes, every format), ringdec=KB
// (GemvTuning::tma_ring_bytes_decode), ringint4=KB (GemvTuning::tma_ring_bytes_int4), xreg / no-xreg
// (GemvTuning::tma_x_registers), tiles=N (GemvTuning::tma_tile_group and tma_tile_group_int4: tiles
// per tile-end barrier), tiles4=N (int4's alone), pf=MB (GemvTuning::tma_prefetch_next_bytes,
// bf16), chunk512 (GemvTuning::tma_chunk_any_divisor off), balanced (tma_balanced_grid),
// oblocks=N (decode_o_blocks), ospare=N (decode_o_spare_sms_int4), pad1024 (tma_int4_pad_256
// off: int4 rows padded to 1024 elements, a second engine), no-tilefit (tma_tile_group_fits_x
// off), xcap=KB (GemvTuning::tma_batch_max_x: batch 8), x4cap=KB (tma_batch4_max_x: batches
// 2-4), x8int4=KB (tma_int4_batch8_max_x), tilex=KB (tma_batch_fewer_tiles_x: bf16), tilexb=KB
// (tma_batch_fewer_tiles_x_byte: int8, fp8), split8=MASK (GemvTuning::tma_split_batch8: a
// WeightFormat mask), split4=MASK (tma_split_batch4), deqmb=MB (DequantGemmTuning::chunk_bytes: the prefill's bf16 chunks of a
// quantized weight; 0 = the whole weight), no-fused (DequantGemmTuning::fused off: quantized
// prefill through the bf16 copy, as before lab notes 96 and 98); attn-late: the attention's
// loads after its wait, attn-blocks=N:
// AttentionTuning::head_blocks, odig / no-odig: AttentionTuning::o_digits): tg tok/s of each on
// one engine per model and format (one per int4 row layout), the variants alternated in each of
// --reps rounds (the lab's A/B in one call, no rebuild).
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ao/kernels/cuda/cublas_check.h"
#include "ao/kernels/cuda/gemm_dequant.h"
#include "ao/kernels/cuda/kernel_trace.h"
#include "ao/kernels/cuda/kernels.h"
#include "ao/runtime/cuda_engine.h"

namespace {
std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

// Mean microseconds per call of fn over `reps` calls on stream s, after one warm-up call (CUDA
// events around the calls).
class EventTimer {
 public:
  explicit EventTimer(cudaStream_t s) : s_(s) {
    AO_CUDA_CHECK(cudaEventCreate(&t0_));
    AO_CUDA_CHECK(cudaEventCreate(&t1_));
  }
  ~EventTimer() {
    cudaEventDestroy(t0_);
    cudaEventDestroy(t1_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  template <typename Fn>
  double us(const Fn& fn, int reps) {
    fn();
    AO_CUDA_CHECK(cudaEventRecord(t0_, s_));
    for (int i = 0; i < reps; ++i) fn();
    AO_CUDA_CHECK(cudaEventRecord(t1_, s_));
    AO_CUDA_CHECK(cudaEventSynchronize(t1_));
    float ms = 0;
    AO_CUDA_CHECK(cudaEventElapsedTime(&ms, t0_, t1_));
    return 1e3 * ms / reps;
  }

 private:
  cudaStream_t s_;
  cudaEvent_t t0_ = nullptr, t1_ = nullptr;
};

// --ab: a tuning variant (GEMV and attention) by name, modifiers joined by '+' (e.g.
// "direct+hold=2").
struct Variant {
  ao::cuda::GemvTuning gemv;
  ao::cuda::AttentionTuning attention;
  ao::cuda::DequantGemmTuning prefill = ao::cuda::dequant_gemm_tuning();
};
// The integer after a variant's `name=` (a whole, in-range number), or an error naming it.
int variant_int(const std::string& mod, size_t prefix) {
  const std::string digits = mod.substr(prefix);
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(digits, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (digits.empty() || used != digits.size())
    throw std::invalid_argument("--ab: variant '" + mod + "' needs an integer after '" +
                                mod.substr(0, prefix) + "'");
  return v;
}
// A ring size in KB after `name=` (0 = the default, at most 1024), in bytes.
int variant_kb(const std::string& mod, size_t prefix) {
  const int kb = variant_int(mod, prefix);
  if (kb < 0 || kb > 1024)
    throw std::invalid_argument("--ab: variant '" + mod + "' needs a size of 0-1024 KB");
  return kb * 1024;
}

Variant apply_variant(const Variant& base, const std::string& v) {
  Variant r = base;
  ao::cuda::GemvTuning& t = r.gemv;
  for (const auto& mod : split(v, '+')) {
    if (mod == "base")
      continue;
    else if (mod == "direct")
      t.tma_direct_fp16 = true;
    else if (mod == "nodirect")
      t.tma_direct_fp16 = false;
    else if (mod == "latenorm")
      t.norm_weight_before_wait = false;
    else if (mod.rfind("hold=", 0) == 0)
      t.tma_hold_stages = t.tma_hold_stages_bf16_input = t.tma_hold_stages_bf16_input_decode =
          variant_int(mod, 5);
    else if (mod.rfind("holdrms=", 0) == 0)
      t.tma_hold_stages = variant_int(mod, 8);
    else if (mod.rfind("holdbf16=", 0) == 0)
      t.tma_hold_stages_bf16_input = t.tma_hold_stages_bf16_input_decode = variant_int(mod, 9);
    else if (mod.rfind("holdbf16dec=", 0) == 0)  // the formats that decode only
      t.tma_hold_stages_bf16_input_decode = variant_int(mod, 12);
    else if (mod == "tma-int4")  // int4 on the TMA kernel for every shape
      t.tma_int4 = true, t.tma_int4_shape_rule = false;
    else if (mod.rfind("tma-int4-k>=", 0) == 0)  // int4 on the TMA kernel where K >= N
      t.tma_int4 = true, t.tma_int4_shape_rule = false, t.tma_int4_min_k = variant_int(mod, 12);
    else if (mod == "no-tma-int4")
      t.tma_int4 = false;
    else if (mod == "int4-shape-rule")  // GemvTuning::tma_int4_shape_rule
      t.tma_int4_shape_rule = true;
    else if (mod == "no-int4-shape-rule")
      t.tma_int4_shape_rule = false;
    else if (mod == "no-tma-int8")
      t.tma_int8 = false;
    else if (mod == "no-tma-fp8")
      t.tma_fp8 = false;
    else if (mod == "attn-late")
      r.attention.loads_before_wait = false;
    else if (mod.rfind("attn-blocks=", 0) == 0)  // AttentionTuning::head_blocks
      r.attention.head_blocks = variant_int(mod, 12);
    else if (mod == "odig")  // AttentionTuning::o_digits: int4's o takes the attention's digits
      r.attention.o_digits = true;
    else if (mod == "no-odig")
      r.attention.o_digits = false;
    else if (mod == "no-shape-rule")
      t.tma_int8_shape_rule = false;
    else if (mod == "shape-rule")
      t.tma_int8_shape_rule = true;
    else if (mod == "tma-f16-early")  // int8/fp8 on the TMA kernel launch the next kernel early
      t.tma_fp16_early_dependents = true;
    else if (mod == "late")  // every GEMV launches the next kernel late (AO_GEMV_EARLY=0)
      t.early_dependents = false;
    else if (mod == "evict-first")
      t.tma_evict_first = true;
    else if (mod == "no-evict-first")
      t.tma_evict_first = false;
    else if (mod == "xreg")
      t.tma_x_registers = true;
    else if (mod == "no-xreg")
      t.tma_x_registers = false;
    else if (mod.rfind("tiles=", 0) == 0)  // GemvTuning::tma_tile_group and _int4
      t.tma_tile_group = t.tma_tile_group_int4 = variant_int(mod, 6);
    else if (mod.rfind("pad=", 0) == 0)  // GemvTuning::tma_pad_rows (a WeightFormat mask)
      t.tma_pad_rows = variant_int(mod, 4);
    else if (mod.rfind("padk4=", 0) == 0)  // GemvTuning::tma_pad_rows_int4_min_k
      t.tma_pad_rows_int4_min_k = variant_int(mod, 6);
    else if (mod.rfind("padk=", 0) == 0)  // GemvTuning::tma_pad_rows_byte_max_k
      t.tma_pad_rows_byte_max_k = variant_int(mod, 5);
    else if (mod.rfind("pf=", 0) == 0)  // GemvTuning::tma_prefetch_next_bytes (bf16), in MB
      t.tma_prefetch_next_bytes = int64_t{variant_int(mod, 3)} << 20;
    else if (mod.rfind("tiles4=", 0) == 0)  // GemvTuning::tma_tile_group_int4
      t.tma_tile_group_int4 = variant_int(mod, 7);
    else if (mod.rfind("late-out=", 0) == 0)  // GemvTuning::tma_late_outputs (a bit mask)
      t.tma_late_outputs = variant_int(mod, 9);
    else if (mod.rfind("ring=", 0) == 0)  // GemvTuning::tma_ring_bytes, in KB
      t.tma_ring_bytes = variant_kb(mod, 5);
    else if (mod.rfind("ringdec=", 0) == 0)  // GemvTuning::tma_ring_bytes_decode, in KB
      t.tma_ring_bytes_decode = variant_kb(mod, 8);
    else if (mod.rfind("ringint4=", 0) == 0)  // GemvTuning::tma_ring_bytes_int4, in KB
      t.tma_ring_bytes_int4 = variant_kb(mod, 9);
    else if (mod == "chunk512")  // GemvTuning::tma_chunk_any_divisor = false
      t.tma_chunk_any_divisor = false;
    else if (mod == "balanced")  // GemvTuning::tma_balanced_grid
      t.tma_balanced_grid = true;
    else if (mod.rfind("oblocks=", 0) == 0)  // GemvTuning::decode_o_blocks
      t.decode_o_blocks = variant_int(mod, 8);
    else if (mod.rfind("ospare=", 0) == 0)  // GemvTuning::decode_o_spare_sms_int4
      t.decode_o_spare_sms_int4 = variant_int(mod, 7);
    else if (mod == "pad1024")  // GemvTuning::tma_int4_pad_256 = false (at the engine's creation)
      t.tma_int4_pad_256 = false;
    else if (mod == "no-tilefit")  // GemvTuning::tma_tile_group_fits_x = false
      t.tma_tile_group_fits_x = false;
    else if (mod.rfind("xcap=", 0) == 0)  // GemvTuning::tma_batch_max_x, in KB
      t.tma_batch_max_x = variant_kb(mod, 5);
    else if (mod.rfind("x4cap=", 0) == 0)  // GemvTuning::tma_batch4_max_x, in KB
      t.tma_batch4_max_x = variant_kb(mod, 6);
    else if (mod.rfind("tilex=", 0) == 0)  // GemvTuning::tma_batch_fewer_tiles_x, in KB
      t.tma_batch_fewer_tiles_x = variant_kb(mod, 6);
    else if (mod.rfind("x8int4=", 0) == 0)  // GemvTuning::tma_int4_batch8_max_x, in KB
      t.tma_int4_batch8_max_x = variant_kb(mod, 7);
    else if (mod.rfind("tilexb=", 0) == 0)  // GemvTuning::tma_batch_fewer_tiles_x_byte, in KB
      t.tma_batch_fewer_tiles_x_byte = variant_kb(mod, 7);
    else if (mod.rfind("split8=", 0) == 0)  // GemvTuning::tma_split_batch8 (a WeightFormat mask)
      t.tma_split_batch8 = variant_int(mod, 7);
    else if (mod.rfind("split4=", 0) == 0)  // GemvTuning::tma_split_batch4 (a WeightFormat mask)
      t.tma_split_batch4 = variant_int(mod, 7);
    else if (mod.rfind("deqmb=", 0) == 0)  // DequantGemmTuning::chunk_bytes in MB (0: whole)
      r.prefill.chunk_bytes = int64_t{variant_int(mod, 6)} << 20;
    else if (mod == "no-fused")  // DequantGemmTuning::fused = false (the bf16 copy)
      r.prefill.fused = false;
    else
      throw std::invalid_argument(
          "--ab: unknown variant '" + mod +
          "' (base, direct, nodirect, latenorm, hold=N, holdrms=N, "
          "holdbf16=N, holdbf16dec=N, tma-int4, tma-int4-k>=N, no-tma-int4, int4-shape-rule, "
          "no-int4-shape-rule, no-tma-int8, no-tma-fp8, "
          "attn-late, attn-blocks=N, odig, no-odig, shape-rule, no-shape-rule, evict-first, "
          "no-evict-first, tma-f16-early, late, late-out=MASK, ring=KB, ringdec=KB, ringint4=KB, xreg, "
          "no-xreg, "
          "tiles=N, tiles4=N, pad=MASK, padk=K, padk4=K, pf=MB, chunk512, balanced, oblocks=N, ospare=N, pad1024, no-tilefit, xcap=KB, x4cap=KB, x8int4=KB, tilex=KB, tilexb=KB, split8=MASK, split4=MASK, deqmb=MB, no-fused; join with '+')");
  }
  return r;
}

// --ab: tg tok/s (and with --pp, pp tok/s) of each tuning variant on one engine per model and
// format. Every round runs each variant once, on a re-captured decode graph, so the card's drift
// hits them alike; the table has each round and the median.
void ab_table(const std::vector<std::string>& models, const std::vector<std::string>& formats,
              const std::vector<std::string>& variants, int pp, int tg, int rounds, double bw,
              double gemm_tflops) {
  using namespace ao::runtime;
  const Variant base{ao::cuda::gemv_tuning(), ao::cuda::attention_tuning(),
                     ao::cuda::dequant_gemm_tuning()};
  std::vector<Variant> tunings;
  for (const auto& v : variants) tunings.push_back(apply_variant(base, v));
  auto set_all = [](const Variant& t) {
    ao::cuda::set_gemv_tuning(t.gemv);
    ao::cuda::set_attention_tuning(t.attention);
    ao::cuda::set_dequant_gemm_tuning(t.prefill);
  };
  const char* pp_cols = pp > 0 ? " pp t/s, each round | pp median | TFLOP/s | of GEMM |" : "";
  std::printf("| model | format | variant |%s tg%d t/s, each round | median | of copy BW |\n",
              pp_cols, tg);
  std::printf("|---|---|---|%s---|---|---|\n", pp > 0 ? "---|---|---|---|" : "");
  auto joined = [](const std::vector<double>& xs) {
    std::string each;
    for (double x : xs) {
      char b[32];
      std::snprintf(b, sizeof b, "%s%.1f", each.empty() ? "" : " / ", x);
      each += b;
    }
    return each;
  };
  auto median_of = [](std::vector<double> xs) {
    if (xs.empty()) return 0.0;
    std::sort(xs.begin(), xs.end());
    return xs[xs.size() / 2];
  };
  for (const auto& m : models)
    for (const auto& f : formats) {
      CudaEngineOptions opt;
      opt.format = parse_cuda_weight_format(f, &opt.group_size);
      opt.max_seq_len = std::max(pp + tg, 16);
      opt.max_prefill = std::max(std::min(pp, 512), 1);
      // One engine per int4 row layout among the variants (GemvTuning::tma_int4_pad_256 is read
      // when the weights are made), each made under its variant's tuning.
      std::unique_ptr<CudaEngine> engines[2];
      for (const Variant& t : tunings)
        if (!engines[t.gemv.tma_int4_pad_256]) {
          set_all(t);
          engines[t.gemv.tma_int4_pad_256] =
              CudaEngine::create_synthetic(CudaEngine::synthetic_config(m), opt);
        }
      std::vector<std::vector<double>> tps(variants.size()), pps(variants.size()),
          tfl(variants.size());
      std::vector<double> gb(variants.size());
      for (int r = 0; r < rounds; ++r)
        for (size_t v = 0; v < variants.size(); ++v) {
          set_all(tunings[v]);
          CudaEngine& eng = *engines[tunings[v].gemv.tma_int4_pad_256];
          eng.recapture();
          const CudaBenchResult res = eng.bench(pp, tg, 1);
          if (tg > 0) tps[v].push_back(res.tg_tok_s);
          if (pp > 0) pps[v].push_back(res.pp_tok_s), tfl[v].push_back(res.pp_tflops);
          gb[v] = res.weight_gb;
        }
      for (size_t v = 0; v < variants.size(); ++v) {
        const double med = median_of(tps[v]);
        std::string ppc;
        if (pp > 0) {
          char b[128];
          const double t = median_of(tfl[v]);
          std::snprintf(b, sizeof b, " %s | %.1f | %.0f | %.0f%% |", joined(pps[v]).c_str(),
                        median_of(pps[v]), t, 100.0 * t / gemm_tflops);
          ppc = b;
        }
        std::printf("| %s | %s | %s |%s %s | %.1f | %.0f%% |\n", m.c_str(), f.c_str(),
                    variants[v].c_str(), ppc.c_str(), joined(tps[v]).c_str(), med,
                    100.0 * gb[v] * med / bw);
        std::fflush(stdout);
      }
      set_all(base);
    }
}

// --prefill-gemms: each linear layer of `model` at M = m rows, alone, for each format and --ab
// variant (DequantGemmTuning): the quantized weight through DequantGemm against cuBLAS on the
// same weight in bf16 (the ceiling), CUDA events.
void prefill_gemm_table(const std::vector<std::string>& formats,
                        const std::vector<std::string>& variants, const std::string& model, int m,
                        int reps) {
  using namespace ao::cuda;
  cudaStream_t s;
  AO_CUDA_CHECK(cudaStreamCreate(&s));
  cublasHandle_t h;
  AO_CUBLAS_CHECK(cublasCreate(&h));
  AO_CUBLAS_CHECK(cublasSetStream(h, s));
  EventTimer timer(s);
  auto time_us = [&](const auto& fn) { return timer.us(fn, reps); };
  const ao::io::ModelConfig mc = ao::runtime::CudaEngine::synthetic_config(model);
  const int64_t d = mc.dim, f = mc.hidden_dim, hd = mc.head_dim;
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const Shape shapes[] = {{"qkv", (mc.n_heads + 2 * mc.n_kv_heads) * hd, d},
                          {"o", d, mc.n_heads * hd},
                          {"gate_up", 2 * f, d},
                          {"down", d, f},
                          {"lm_head (all rows)", mc.vocab_size, d}};
  size_t max_nk = 0, max_n = 0, max_k = 0;
  for (const auto& sh : shapes) {
    max_nk = std::max(max_nk, static_cast<size_t>(sh.n * sh.k));
    max_n = std::max(max_n, static_cast<size_t>(sh.n));
    max_k = std::max(max_k, static_cast<size_t>(sh.k));
  }
  void *src, *x, *y;
  AO_CUDA_CHECK(cudaMalloc(&src, max_nk * 2));
  AO_CUDA_CHECK(cudaMalloc(&x, size_t(m) * max_k * 2));
  AO_CUDA_CHECK(cudaMalloc(&y, size_t(m) * max_n * 2 + max_n * 4));
  fill_random_bf16(static_cast<uint16_t*>(x), int64_t(m) * max_k, 1.f, 3, s);
  const DequantGemmTuning base = dequant_gemm_tuning();
  std::printf(
      "\n| GEMM (%s shape, M = %d) | format | variant | chunks | us | TFLOP/s | bf16 weight us | "
      "of bf16 |\n|---|---|---|---|---|---|---|---|\n",
      model.c_str(), m);
  DequantGemm dg;
  for (const auto& sh : shapes) {
    fill_random_bf16(static_cast<uint16_t*>(src), sh.n * sh.k, 0.03f, 5, s);
    DeviceWeight wb;
    wb.n = sh.n, wb.k = sh.k, wb.k_padded = sh.k, wb.data = src;
    const double flop = 2.0 * m * sh.n * sh.k;
    const double us_bf16 = time_us([&] {
      dg.run(h, wb, static_cast<uint16_t*>(x), m, y, CUDA_R_16BF, s);
    });
    for (const auto& fname : formats) {
      int g = 128;
      const auto cf = ao::runtime::parse_cuda_weight_format(fname, &g);
      if (cf == ao::runtime::CudaWeightFormat::bf16) continue;
      DeviceWeight w;
      w.format = cf == ao::runtime::CudaWeightFormat::int8wo   ? WeightFormat::int8
                 : cf == ao::runtime::CudaWeightFormat::int4wo ? WeightFormat::int4
                                                               : WeightFormat::fp8;
      w.n = sh.n;
      w.k = sh.k;
      w.group_size = w.format == WeightFormat::int4 ? g : 0;
      w.k_padded = gemv_padded_k(w.format, sh.n, sh.k, w.group_size);
      AO_CUDA_CHECK(cudaMalloc(&w.data, w.n * w.k_padded));
      AO_CUDA_CHECK(cudaMalloc(
          &w.scale, int4_scale_rows(w.n) * (w.k_padded / 32) * kInt4ScaleBytes + w.n * 4));
      quantize_weight(static_cast<uint16_t*>(src), w, false, static_cast<float*>(y), s);
      for (const auto& v : variants) {
        set_dequant_gemm_tuning(apply_variant(Variant{gemv_tuning(), attention_tuning(), base}, v)
                                    .prefill);
        const DequantChunks c =
            plan_dequant_chunks(w.n, w.k_padded, dequant_gemm_tuning().chunk_bytes);
        const double us =
            time_us([&] { dg.run(h, w, static_cast<uint16_t*>(x), m, y, CUDA_R_16BF, s); });
        std::printf("| %s %lldx%lld | %s | %s | %lld x %lld | %.1f | %.0f | %.1f | %.0f%% |\n",
                    sh.name, (long long)sh.n, (long long)sh.k, fname.c_str(), v.c_str(),
                    (long long)c.count, (long long)c.rows, us, flop / us / 1e6, us_bf16,
                    100.0 * us_bf16 / us);
        std::fflush(stdout);
      }
      set_dequant_gemm_tuning(base);
      AO_CUDA_CHECK(cudaFree(w.data));
      AO_CUDA_CHECK(cudaFree(w.scale));
    }
  }
  cudaFree(src);
  cudaFree(x);
  cudaFree(y);
  cublasDestroy(h);
  cudaStreamDestroy(s);
}

// Kernel lab: each decode-step kernel of `model`'s shapes alone, back to back, CUDA events.
void kernel_table(const std::vector<std::string>& formats, double copy_bw, int reps, bool m1_only,
                  const std::vector<std::string>& variants, const std::string& model) {
  using namespace ao::cuda;
  cudaStream_t s;
  AO_CUDA_CHECK(cudaStreamCreate(&s));
  EventTimer timer(s);
  auto time_us = [&](const auto& fn, int reps) { return timer.us(fn, reps); };
  struct Shape {
    const char* name;
    int64_t n, k;
    GemvInput in;
    GemvOutput out;
  };
  // The model's GEMVs (the engine's synthetic config): qkv (q heads + 2 kv heads) x head_dim
  // by d, o, gate_up (2 f by d), down and the lm_head.
  const ao::io::ModelConfig mc = ao::runtime::CudaEngine::synthetic_config(model);
  const int64_t d = mc.dim, f = mc.hidden_dim, hd = mc.head_dim;
  const Shape shapes[] = {
      {"qkv", (mc.n_heads + 2 * mc.n_kv_heads) * hd, d, GemvInput::rmsnorm, GemvOutput::bf16},
      {"o", d, mc.n_heads * hd, GemvInput::bf16, GemvOutput::add_residual},
      {"gate_up+swiglu", 2 * f, d, GemvInput::rmsnorm, GemvOutput::swiglu},
      {"down", d, f, GemvInput::bf16, GemvOutput::add_residual},
      {"lm_head", mc.vocab_size, d, GemvInput::rmsnorm, GemvOutput::f32}};
  // Buffers for the largest shape: the weight's bf16 source, x (8 rows of fp32 or bf16 of up to
  // max_k), y (8 rows of fp32 of up to max_n), the RMSNorm weight.
  size_t max_nk = 0, max_n = 0, max_k = 0;
  for (const auto& sh : shapes) {
    max_nk = std::max(max_nk, static_cast<size_t>(sh.n * sh.k));
    max_n = std::max(max_n, static_cast<size_t>(sh.n));
    max_k = std::max(max_k, static_cast<size_t>(sh.k));
  }
  void *src, *x, *y, *normw;
  AO_CUDA_CHECK(cudaMalloc(&src, max_nk * 2));
  AO_CUDA_CHECK(cudaMalloc(&x, 8 * max_k * 4));
  AO_CUDA_CHECK(cudaMalloc(&y, 8 * max_n * 4));
  AO_CUDA_CHECK(cudaMalloc(&normw, max_k * 2));
  fill_random_bf16(static_cast<uint16_t*>(x), static_cast<int64_t>(8 * max_k * 2), 1.f, 3, s);
  fill_bf16(static_cast<uint16_t*>(normw), static_cast<int64_t>(max_k), 1.f, s);
  const GemvTuning gemv_base = gemv_tuning();
  std::printf(
      "\n| kernel (%s shape) | format | M | bytes MB | us | GB/s | of copy BW "
      "|\n|---|---|---|---|---|---|---|\n",
      model.c_str());
  for (const auto& fname : formats) {
    if (fname == "none") continue;  // --formats none: the attention rows alone
    int g = 128;
    auto f = ao::runtime::parse_cuda_weight_format(fname, &g);
    WeightFormat wf = f == ao::runtime::CudaWeightFormat::bf16     ? WeightFormat::bf16
                      : f == ao::runtime::CudaWeightFormat::int8wo ? WeightFormat::int8
                      : f == ao::runtime::CudaWeightFormat::int4wo ? WeightFormat::int4
                                                                   : WeightFormat::fp8;
    const ActQuant aq = f == ao::runtime::CudaWeightFormat::fp8dq_row      ? ActQuant::fp8_row
                        : f == ao::runtime::CudaWeightFormat::fp8dq_tensor ? ActQuant::fp8_tensor
                                                                           : ActQuant::none;
    for (const auto& sh : shapes) {
      fill_random_bf16(static_cast<uint16_t*>(src), sh.n * sh.k, 0.03f, 5, s);
      DeviceWeight w;
      w.format = wf;
      w.n = sh.n;
      w.k = sh.k;
      w.group_size = wf == WeightFormat::int4 ? g : 0;
      w.k_padded = gemv_padded_k(wf, sh.n, sh.k, w.group_size);
      w.act_quant = aq;
      AO_CUDA_CHECK(cudaMalloc(&w.data, w.n * w.k_padded * 2));
      AO_CUDA_CHECK(cudaMalloc(
          &w.scale, int4_scale_rows(w.n) * (w.k_padded / 32) * kInt4ScaleBytes + w.n * 4));
      quantize_weight(static_cast<uint16_t*>(src), w, aq == ActQuant::fp8_tensor,
                      static_cast<float*>(y), s);
      for (int m : {1, 2, 4, 8}) {
        if (m != 1 && m1_only) continue;
        for (const auto& v : variants) {
          // Each --ab variant's GEMV tuning (the default alone without --ab).
          set_gemv_tuning(apply_variant(Variant{gemv_base, attention_tuning()}, v).gemv);
          GemvArgs a;
          a.m = m;
          a.input = sh.in;
          a.x = x;
          a.rms_weight = static_cast<uint16_t*>(normw);
          a.output = sh.out;
          a.y = y;
          const double us = time_us([&] { gemv(w, a, s); }, reps);
          const double gbs = w.bytes() / us / 1e3;
          std::printf("| gemv %s %lldx%lld | %s%s | %d | %.1f | %.1f | %.0f | %.0f%% |\n", sh.name,
                      (long long)sh.n, (long long)sh.k, fname.c_str(),
                      variants.size() > 1 ? (" (" + v + ")").c_str() : "", m, w.bytes() / 1e6, us,
                      gbs, 100 * gbs / copy_bw);
        }
        set_gemv_tuning(gemv_base);
      }
      AO_CUDA_CHECK(cudaFree(w.data));
      AO_CUDA_CHECK(cudaFree(w.scale));
    }
  }
  // Attention decode, 32 q heads / 8 kv heads / 128 dims, cache of 4096.
  AttentionArgs aa{32, 8, 128, 4096, 0.088f};
  void *kc, *vc, *q, *part, *out, *pos;
  AO_CUDA_CHECK(cudaMalloc(&kc, size_t(8) * 4096 * 128 * 2));
  AO_CUDA_CHECK(cudaMalloc(&vc, size_t(8) * 4096 * 128 * 2));
  AO_CUDA_CHECK(cudaMalloc(&q, 32 * 128 * 2));
  AO_CUDA_CHECK(cudaMalloc(&part, attention_decode_workspace(aa)));
  AO_CUDA_CHECK(cudaMemset(part, 0, attention_decode_workspace(aa)));
  AO_CUDA_CHECK(cudaMalloc(&out, 32 * 128 * 2));
  AO_CUDA_CHECK(cudaMalloc(&pos, 4));
  fill_random_bf16(static_cast<uint16_t*>(kc), 8 * 4096 * 128, 1.f, 1, s);
  fill_random_bf16(static_cast<uint16_t*>(vc), 8 * 4096 * 128, 1.f, 2, s);
  fill_random_bf16(static_cast<uint16_t*>(q), 32 * 128, 1.f, 3, s);
  // Each --ab variant's attention tuning (the default alone without --ab).
  const AttentionTuning attn_base = attention_tuning();
  for (const auto& v : variants) {
    set_attention_tuning(apply_variant(Variant{gemv_tuning(), attn_base}, v).attention);
    for (int p : {64, 128, 1024, 4095}) {
      AO_CUDA_CHECK(cudaMemcpy(pos, &p, 4, cudaMemcpyHostToDevice));
      const double us = time_us(
          [&] {
            attention_decode(static_cast<uint16_t*>(q), static_cast<uint16_t*>(kc),
                             static_cast<uint16_t*>(vc), static_cast<int32_t*>(pos), aa, part,
                             static_cast<uint16_t*>(out), s);
          },
          50);
      const double mb = 2.0 * 8 * (p + 1) * 128 * 2 / 1e6;
      std::printf("| attention decode pos %d (%s) | bf16 | 1 | %.1f | %.1f | %.0f | |\n", p,
                  v.c_str(), mb, us, mb / us * 1e3);
    }
  }
  set_attention_tuning(attn_base);
  // Prefill attention: 512 and 2048 causal queries from position 0 (FLOPs: QK^T and PV over the
  // causal half).
  for (int m : {512, 2048}) {
    void* pq;
    AO_CUDA_CHECK(cudaMalloc(&pq, size_t(m) * 32 * 128 * 2));
    void* po;
    AO_CUDA_CHECK(cudaMalloc(&po, size_t(m) * 32 * 128 * 2));
    fill_random_bf16(static_cast<uint16_t*>(pq), int64_t(m) * 32 * 128, 1.f, 4, s);
    const int zero = 0;
    AO_CUDA_CHECK(cudaMemcpy(pos, &zero, 4, cudaMemcpyHostToDevice));
    const double us = time_us(
        [&] {
          attention_prefill(static_cast<uint16_t*>(pq), m, static_cast<uint16_t*>(kc),
                            static_cast<uint16_t*>(vc), static_cast<int32_t*>(pos), aa,
                            static_cast<uint16_t*>(po), s);
        },
        20);
    const double flop = 4.0 * 32 * 128 * (double(m) * (m + 1) / 2);
    std::printf(
        "| attention prefill %d tokens (causal, 32/8 heads) | bf16 | %d | | %.1f | %.0f TFLOP/s | "
        "|\n",
        m, m, us, flop / us / 1e6);
    cudaFree(pq);
    cudaFree(po);
  }
  // Sampling over a 128256 vocabulary.
  SamplerState st{0.f, 0, 1.f, 0, 1, 0};
  void *dst, *tok;
  AO_CUDA_CHECK(cudaMalloc(&dst, sizeof(st)));
  AO_CUDA_CHECK(cudaMalloc(&tok, 8));
  AO_CUDA_CHECK(cudaMemcpy(dst, &st, sizeof(st), cudaMemcpyHostToDevice));
  const double us_s = time_us(
      [&] {
        sample(static_cast<float*>(y), 128256, static_cast<SamplerState*>(dst),
               static_cast<int32_t*>(tok), nullptr, 1, nullptr, static_cast<int32_t*>(pos), 0, s);
      },
      50);
  std::printf("| sample greedy, vocab 128256 | f32 | 1 | 0.5 | %.1f | | |\n", us_s);
  std::fflush(stdout);
  for (void* p : {src, x, y, normw, kc, vc, q, part, out, pos, dst, tok}) cudaFree(p);
  cudaStreamDestroy(s);
}

// Weight bytes per element of a GEMV in `format` (for the trace's GB/s column).
double bytes_per_weight(const std::string& format) {
  int g = 128;
  const auto f = ao::runtime::parse_cuda_weight_format(format, &g);
  switch (f) {
    case ao::runtime::CudaWeightFormat::bf16:
      return 2.0;
    case ao::runtime::CudaWeightFormat::int4wo:
      return 0.5 + 8.0 / g;
    default:
      return 1.0;
  }
}

// One decode step's kernels laid out from their %globaltimer stamps (trace.cuh), `steps` times
// at position `pos`; prints one row per kernel class with means over its instances.
void trace_decode(const std::string& model, const std::string& format, int pos, int steps,
                  double copy_bw) {
  using namespace ao::cuda;
  using namespace ao::runtime;
  CudaEngineOptions opt;
  opt.format = parse_cuda_weight_format(format, &opt.group_size);
  opt.max_seq_len = pos + steps + 16;
  opt.max_prefill = 512;
  auto eng = CudaEngine::create_synthetic(CudaEngine::synthetic_config(model), opt);
  const int vocab = eng->config().vocab_size;
  std::mt19937 rng(7);
  std::vector<int32_t> prompt(static_cast<size_t>(std::max(pos - 3, 1)));
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % vocab);
  eng->prefill(prompt);
  for (int i = 0; i < 3; ++i) eng->decode(static_cast<int32_t>(rng() % vocab));  // graph warm
  const unsigned cap = 1u << 20;
  const size_t bytes = sizeof(KernelTraceBuffer) + size_t(cap) * sizeof(KernelTraceEvent);
  KernelTraceBuffer* dbuf = nullptr;
  AO_CUDA_CHECK(cudaMalloc(&dbuf, bytes));
  KernelTraceReport report(bytes_per_weight(format));
  std::vector<KernelTraceEvent> ev;
  for (int st = 0; st < steps; ++st) {
    KernelTraceBuffer h{0, cap, {}};
    AO_CUDA_CHECK(cudaMemset(dbuf, 0, bytes));  // slots a block reserves but never stamps stay 0
    AO_CUDA_CHECK(cudaMemcpy(dbuf, &h, sizeof(h), cudaMemcpyHostToDevice));
    // A pageable copy may return before its DMA lands, and the engine's stream does not wait
    // for the legacy one (docs/CUDA.md, "A setup race").
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    set_kernel_trace(dbuf);
    eng->decode(static_cast<int32_t>(rng() % vocab));
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    set_kernel_trace(nullptr);
    AO_CUDA_CHECK(cudaMemcpy(&h, dbuf, sizeof(h), cudaMemcpyDeviceToHost));
    const unsigned count = std::min(h.count, cap);
    if (h.count > cap) std::fprintf(stderr, "trace: %u events, kept %u\n", h.count, cap);
    ev.resize(count);
    AO_CUDA_CHECK(cudaMemcpy(ev.data(),
                             reinterpret_cast<char*>(dbuf) + offsetof(KernelTraceBuffer, events),
                             count * sizeof(KernelTraceEvent), cudaMemcpyDeviceToHost));
    report.add_step(ev);
  }
  cudaFree(dbuf);
  const double step_us = report.step_us();
  std::printf(
      "\n### trace %s %s, position %d (%d steps): step %.1f us = %.1f tok/s (timer resolution "
      "%.0f ns)\n\nTimes in us, means per instance; start, last start and wait relative to the "
      "previous kernel's last block end; rmsnorm and prologue from the first wait release; x "
      "landed, x last, x staged and block prologue per block from its own wait release (x "
      "landed: thread 0's first x loads in its registers, x last: the block's last warp's; TMA "
      "kernel only).\n\n"
      "| kernel | per step | adds | of step | start | last start | wait | rmsnorm | prologue | "
      "x landed | x last | x staged | block prologue | stream | tail | blocks | GB/s over its "
      "added time | of copy BW |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      model.c_str(), format.c_str(), pos, report.steps(), step_us,
      step_us > 0 ? 1e6 / step_us : 0.0, report.resolution_ns());
  for (const auto& r : report.rows()) {
    std::string gbs, frac;
    if (r.weight_mb > 0) {
      const double g = r.weight_mb / r.adds * 1e3;  // MB / us = TB/s
      gbs = std::to_string(static_cast<int>(g));
      frac = std::to_string(static_cast<int>(100 * g / copy_bw)) + "%";
    }
    std::printf(
        "| %s | %.0f | %.2f | %.1f%% | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | "
        "%.2f | %.2f | %.2f | %.0f | %s | %s |\n",
        r.name.c_str(), r.per_step, r.adds, 100.0 * r.adds * r.per_step / step_us, r.start,
        r.start_last, r.wait, r.rmsnorm, r.prologue, r.block_x_landed, r.block_x_last,
        r.block_staged, r.block_prologue, r.stream, r.tail, r.blocks, gbs.c_str(), frac.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string models = "llama3-8b,llama3-1b", formats = "bf16,int8wo,int4wo-g128", json;
  int pp = 512, tg = 128, reps = 3, ubatch = 512;
  bool kernels = false, kernel_m1 = false, prefill_gemms = false;
  std::string kernel_model = "llama3-8b";
  int trace_pos = -1;
  int kernel_reps = 50;
  std::string ab;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    // A non-negative integer value, or exit 2 naming the flag.
    auto next_int = [&]() -> int {
      const std::string v = next();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0 || n > 1000000) {
        std::fprintf(stderr, "%s needs a non-negative integer, got '%s'\n", a.c_str(), v.c_str());
        std::exit(2);
      }
      return static_cast<int>(n);
    };
    if (a == "--models")
      models = next();
    else if (a == "--formats")
      formats = next();
    else if (a == "--pp")
      pp = next_int();
    else if (a == "--tg")
      tg = next_int();
    else if (a == "--reps")
      reps = next_int();
    else if (a == "--ubatch")  // prompt tokens per prefill chunk (CudaEngineOptions::max_prefill)
      ubatch = std::max(1, next_int());
    else if (a == "--json")
      json = next();
    else if (a == "--kernels")
      kernels = true;
    else if (a == "--kernel-reps")  // e.g. 1 under a profiler
      kernel_reps = next_int();
    else if (a == "--kernel-m1")  // batch 1 only
      kernel_m1 = true;
    else if (a == "--kernel-model")  // the GEMV shapes of llama3-8b, llama3-1b, llama2-7b, qwen2.5-7b or llama3-70b
      kernel_model = next();
    else if (a == "--trace")
      trace_pos = next_int();
    else if (a == "--ab")
      ab = next();
    else if (a == "--prefill-gemms")
      prefill_gemms = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    using namespace ao::runtime;
    // Lab overrides of the GEMV launch choices: AO_GEMV_KSPLIT=1|2|4, AO_GEMV_MMA=0.
    ao::cuda::GemvTuning tune;
    if (const char* e = std::getenv("AO_GEMV_KSPLIT")) tune.k_split = std::atoi(e);
    if (const char* e = std::getenv("AO_GEMV_MMA")) tune.tensor_cores = e[0] != '0';
    if (const char* e = std::getenv("AO_GEMV_EARLY")) tune.early_dependents = e[0] != '0';
    if (const char* e = std::getenv("AO_GEMV_TMA")) {  // 0: none, all: every format it takes
      const std::string v = e;                         // int8 / int4: bf16 and that format
      tune.tma_bf16 = v != "0";
      tune.tma_int8 = v == "all" || v == "int8";
      tune.tma_int4 = v == "all" || v == "int4";
      tune.tma_fp8 = v == "all" || v == "fp8";
    }
    ao::cuda::set_gemv_tuning(tune);
    for (const auto& v : split(ab)) apply_variant(Variant{}, v);  // a bad name fails here, first
    const double bw = cuda_copy_bandwidth_gb_s();
    const double gemm_big = cuda_gemm_tflops(8192, 8192, 8192);
    const int gemm_m = pp > 0 ? pp : 512;  // the prefill's GEMM shape (512 rows without --pp)
    const double gemm_pp = cuda_gemm_tflops(gemm_m, 14336, 4096);
    std::printf("device: %s\n", cuda_device_name().c_str());
    std::printf("d2d copy bandwidth (read+write, 1 GiB): %.0f GB/s\n", bw);
    std::printf("cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s; %dx14336x4096: %.0f TFLOP/s\n\n", gemm_big,
                gemm_m, gemm_pp);
    if (prefill_gemms)
      prefill_gemm_table(split(formats), ab.empty() ? std::vector<std::string>{"base"} : split(ab),
                         kernel_model, gemm_m, std::max(kernel_reps / 5, 3));
    if (kernels)
      kernel_table(split(formats), bw, kernel_reps, kernel_m1,
                   ab.empty() ? std::vector<std::string>{"base"} : split(ab), kernel_model);
    if (trace_pos >= 0) {
      if (!ao::cuda::kernel_trace_available()) {
        std::fprintf(stderr, "--trace needs the kernel lab's build (-DAO_KERNEL_TRACE)\n");
        return 2;
      }
      // One timeline per --ab variant (its tuning in force when the engine captures its graph).
      const Variant base{ao::cuda::gemv_tuning(), ao::cuda::attention_tuning()};
      for (const auto& v : ab.empty() ? std::vector<std::string>{"base"} : split(ab)) {
        const Variant t = apply_variant(base, v);
        ao::cuda::set_gemv_tuning(t.gemv);
        ao::cuda::set_attention_tuning(t.attention);
        if (!ab.empty()) std::printf("\n## variant %s\n", v.c_str());
        for (const auto& m : split(models))
          for (const auto& f : split(formats)) trace_decode(m, f, trace_pos, 5, bw);
      }
      return 0;
    }
    if (models == "none") return 0;
    if (!ab.empty()) {
      ab_table(split(models), split(formats), split(ab), pp, tg, reps, bw, gemm_big);
      return 0;
    }
    std::FILE* jf = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
    if (jf)
      std::fprintf(
          jf,
          "{\"device\":\"%s\",\"copy_gb_s\":%.1f,\"gemm_tflops\":%.1f,\"gemm_pp_tflops\":%.1f}\n",
          cuda_device_name().c_str(), bw, gemm_big, gemm_pp);
    std::printf(
        "| model | format | weights GB | test | t/s | GB/s | of copy BW | TFLOP/s | of GEMM |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& m : split(models)) {
      for (const auto& f : split(formats)) {
        CudaBenchResult r = cuda_bench(m, f, pp, tg, reps, ubatch);
        if (pp > 0)
          std::printf("| %s | %s | %.2f | pp%d%s | %.1f | | | %.0f | %.0f%% |\n", m.c_str(),
                      f.c_str(), r.weight_gb, pp,
                      ubatch < pp ? (" (ub " + std::to_string(ubatch) + ")").c_str() : "",
                      r.pp_tok_s, r.pp_tflops, 100.0 * r.pp_tflops / gemm_big);
        if (tg > 0)
          std::printf("| %s | %s | %.2f | tg%d | %.1f | %.0f | %.0f%% | | |\n", m.c_str(),
                      f.c_str(), r.weight_gb, tg, r.tg_tok_s, r.tg_gb_s, 100.0 * r.tg_gb_s / bw);
        std::fflush(stdout);
        if (jf)
          std::fprintf(
              jf,
              "{\"model\":\"%s\",\"format\":\"%s\",\"weight_gb\":%.4f,\"pp\":%d,\"pp_tok_s\":%.2f,"
              "\"pp_tflops\":%.2f,\"tg\":%d,\"tg_tok_s\":%.2f,\"tg_gb_s\":%.1f}\n",
              m.c_str(), f.c_str(), r.weight_gb, pp, r.pp_tok_s, r.pp_tflops, tg, r.tg_tok_s,
              r.tg_gb_s);
      }
    }
    if (jf) std::fclose(jf);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

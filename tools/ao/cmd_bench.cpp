// ao bench — llama-bench-like throughput: pp (prompt processing) and tg (generation) tokens/s
// on a real model or a random-weight model of a known shape (--synthetic NAME).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/models/registry.h"
#include "ao/runtime/bench.h"
#include "command.h"
#ifdef AO_WITH_CUDA
#include "ao/runtime/cuda_engine.h"
#include "ao/runtime/cuda_weights.h"
#endif

namespace ao::cli {
namespace {

struct BenchArgs {
  std::string model, synthetic, device = "cpu", dtype = "f32", format = "bf16";
  int layers = 0;
  std::vector<int64_t> n_prompt = {512}, n_gen = {128};
  int reps = 3;
  int ubatch = 0;  // --device cuda: prompt tokens per prefill chunk (llama-bench's -ub); 0 = 512
  bool json = false;
};

// The CUDA engine's own benchmark (runtime/cuda_engine.h), reported as the same rows: one
// engine run per (pp, tg) pair, its medians as the row values.
std::vector<runtime::BenchRow> run_cuda_bench(const BenchArgs& a) {
#ifdef AO_WITH_CUDA
  AO_CHECK(a.layers == 0, "bench --device cuda: --layers is not supported");
  const int ubatch = a.ubatch > 0 ? a.ubatch : 512;
  const size_t pairs = std::max(a.n_prompt.size(), a.n_gen.size());
  int64_t max_pp = 1, max_total = 16;
  for (size_t i = 0; i < pairs; ++i) {
    const int64_t pp = a.n_prompt[std::min(i, a.n_prompt.size() - 1)];
    const int64_t tg = a.n_gen[std::min(i, a.n_gen.size() - 1)];
    AO_CHECK(pp > 0 && tg > 0, "bench --device cuda: -p and -n must be positive");
    max_pp = std::max(max_pp, pp);
    max_total = std::max(max_total, pp + tg);
  }
  // A real model: one engine built from the files (TorchAO quantized weights kept), benched
  // for every (pp, tg) pair.
  std::unique_ptr<runtime::CudaEngine> eng;
  std::string label;
  if (a.model.size()) {
    const runtime::CudaModelWeights w = runtime::cuda_model_weights(io::open_model_files(a.model));
    runtime::CudaEngineOptions eo;
    eo.format = runtime::parse_cuda_weight_format(a.format, &eo.group_size);
    AO_CHECK(w.config.max_seq_len <= 0 || max_total <= w.config.max_seq_len,
             "bench --device cuda: pp + tg = {} exceeds the model's context {}", max_total,
             w.config.max_seq_len);
    eo.max_seq_len = static_cast<int>(max_total);
    eo.max_prefill = static_cast<int>(std::min<int64_t>(max_pp, ubatch));
    eng = runtime::CudaEngine::create_from_host(w.config, w.weights, eo);
    label = a.model + " " + (w.torchao ? "torchao" : runtime::cuda_weight_format_name(eo.format, eo.group_size));
    for (const auto& m : w.mapping) fmt::print(stderr, "weights: {}\n", m);
  }
  std::vector<runtime::BenchRow> rows;
  for (size_t i = 0; i < pairs; ++i) {
    const int64_t pp = a.n_prompt[std::min(i, a.n_prompt.size() - 1)];
    const int64_t tg = a.n_gen[std::min(i, a.n_gen.size() - 1)];
    const runtime::CudaBenchResult r =
        eng ? eng->bench(static_cast<int>(pp), static_cast<int>(tg), a.reps)
            : runtime::cuda_bench(a.synthetic, a.format, static_cast<int>(pp),
                                  static_cast<int>(tg), a.reps, ubatch);
    for (const bool is_pp : {true, false}) {
      runtime::BenchRow row;
      row.model = eng ? label : a.synthetic + " synthetic " + r.format;
      row.size_bytes = static_cast<uint64_t>(r.weight_gb * 1e9);
      row.params = r.params;
      row.backend = "CUDA (" + r.device + ")";
      row.threads = num_threads();
      row.test = (is_pp ? "pp" : "tg") + std::to_string(is_pp ? pp : tg);
      row.n_prompt = is_pp ? pp : 0;
      row.n_gen = is_pp ? 0 : tg;
      row.tps_mean = is_pp ? r.pp_tok_s : r.tg_tok_s;
      row.samples_tps = {row.tps_mean};
      const bool seen =
          std::any_of(rows.begin(), rows.end(), [&](const auto& x) { return x.test == row.test; });
      if (!seen) rows.push_back(std::move(row));
    }
  }
  return rows;
#else
  (void)a;
  throw NotSupported(
      "ao bench --device cuda: this build has no CUDA (configure with -DAO_CUDA=ON)");
#endif
}

int run_bench(const BenchArgs& a) {
  AO_CHECK(a.model.empty() != a.synthetic.empty(),
           "bench: give exactly one of -m MODEL or --synthetic NAME");
  AO_CHECK(a.device == "cpu" || a.device == "cuda", "bench: --device must be cpu or cuda, got '{}'",
           a.device);
  if (a.device == "cuda") {
    const auto rows = run_cuda_bench(a);
    fmt::print("{}",
               a.json ? runtime::bench_json(rows).dump(2) + "\n" : runtime::bench_markdown(rows));
    return 0;
  }
  AO_CHECK(a.ubatch == 0,
           "bench: --ubatch-size applies to --device cuda only");
  runtime::BenchOptions o;
  o.n_prompt = a.n_prompt;
  o.n_gen = a.n_gen;
  o.repetitions = a.reps;
  models::LoadOptions lo;
  lo.context = runtime::bench_context(o);
  std::unique_ptr<models::CausalLM> model;
  std::string name;
  if (!a.synthetic.empty()) {
    io::ModelConfig c = models::synthetic_config(a.synthetic);
    if (a.layers > 0) c.n_layers = a.layers;
    const DType wt = dtype_from_name(a.dtype);
    const double need = double(c.parameter_count()) * dtype_size(wt) +
                        2.0 * c.n_layers * c.n_kv_heads * c.head_dim * lo.context * 4;
    const double avail = double(sysconf(_SC_AVPHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
    AO_CHECK(need < 0.9 * avail,
             "bench: synthetic {} needs {:.1f} GiB of weights and cache but {:.1f} GiB of memory "
             "is free; try "
             "--layers N",
             a.synthetic, need / (1 << 30), avail / (1 << 30));
    lo.context = std::min<int64_t>(lo.context, c.max_seq_len);
    model = models::synthetic_model(c, 1, lo, wt);
    name = a.synthetic + (a.layers > 0 ? fmt::format(" ({} layers)", c.n_layers) : "") +
           " synthetic " + a.dtype;
  } else {
    auto m = models::load_model(a.model, lo);
    model = std::move(m.model);
    name = a.model;
  }
  const auto rows = runtime::bench_cpu(*model, name, o);
  if (a.json)
    fmt::print("{}\n", runtime::bench_json(rows).dump(2));
  else
    fmt::print("{}", runtime::bench_markdown(rows));
  return 0;
}

const bool registered = register_command(
    {"bench", "Prompt-processing and generation throughput (llama-bench style)", 60,
     [](CLI::App* sub) {
       auto a = std::make_shared<BenchArgs>();
       sub->add_option("-m,--model", a->model, "HF model folder, .safetensors or llama2.c .bin");
       std::string names;
       for (const auto& n : models::synthetic_model_names())
         names += (names.empty() ? "" : ", ") + n;
       sub->add_option("--synthetic", a->synthetic, "random weights with the shape of: " + names);
       sub->add_option("--dtype", a->dtype, "with --synthetic: weight dtype f32, bf16 or f16")
           ->capture_default_str();
       sub->add_option("--layers", a->layers, "with --synthetic: use only this many layers")
           ->check(CLI::PositiveNumber);
       sub->add_option("-p,--n-prompt", a->n_prompt, "prompt lengths (pp tests)")
           ->delimiter(',')
           ->capture_default_str();
       sub->add_option("-n,--n-gen", a->n_gen, "generation lengths (tg tests)")
           ->delimiter(',')
           ->capture_default_str();
       sub->add_option("-r,--repetitions", a->reps, "timed repetitions per test")
           ->capture_default_str()
           ->check(CLI::PositiveNumber);
       sub->add_option("--device", a->device,
                       "cpu or cuda (cuda: -m MODEL, or --synthetic llama3-1b, llama2-7b, "
                       "llama3-8b, qwen2.5-7b or llama3-70b)")
           ->capture_default_str();
       sub->add_option(
              "--format", a->format,
              "with --device cuda: weights bf16, int8wo, int4wo-g128, fp8-tensor, fp8-row, "
              "fp8dq-tensor or fp8dq-row "
              "(TorchAO checkpoints keep their quantized weights; this applies to the others)")
           ->capture_default_str();
       sub->add_option("--ubatch-size,--ub", a->ubatch,
                       "with --device cuda: prompt tokens per prefill chunk, default 512 "
                       "(llama-bench's -ub; larger chunks spread each quantized weight's "
                       "dequantization over more tokens)")
           ->check(CLI::Range(1, 1 << 20));
       sub->add_flag("--json", a->json, "print JSON instead of a markdown table");
       return [a] { return run_bench(*a); };
     }});

}  // namespace
}  // namespace ao::cli

// ao bench — llama-bench-like throughput: pp (prompt processing) and tg (generation) tokens/s
// on a real model or a random-weight model of a known shape (--synthetic NAME).
#include <fmt/format.h>
#include <unistd.h>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/models/registry.h"
#include "ao/runtime/bench.h"
#include "command.h"

namespace ao::cli {
namespace {

struct BenchArgs {
  std::string model, synthetic, device = "cpu", dtype = "f32";
  int layers = 0;
  std::vector<int64_t> n_prompt = {512}, n_gen = {128};
  int reps = 3;
  bool json = false;
};

int run_bench(const BenchArgs& a) {
  AO_CHECK(a.model.empty() != a.synthetic.empty(),
           "bench: give exactly one of -m MODEL or --synthetic NAME");
  if (a.device != "cpu")
    throw NotSupported("ao bench --device " + a.device + " (only cpu for now)");
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
       sub->add_option("--device", a->device, "cpu (cuda: not supported yet)")
           ->capture_default_str();
       sub->add_flag("--json", a->json, "print JSON instead of a markdown table");
       return [a] { return run_bench(*a); };
     }});

}  // namespace
}  // namespace ao::cli

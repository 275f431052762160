// ao quantize IN OUT --config C [--map FILE] — quantize a model's Linear weights with TorchAO
// configs and write a Hugging Face folder in TorchAO's checkpoint format.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

#include "ao/core/log.h"
#include "ao/core/parallel.h"
#include "ao/io/model_files.h"
#include "ao/quant/checkpoint.h"
#include "command.h"

namespace ao::cli {
namespace {

struct QuantizeArgs {
  std::string in, out, config, map;
  bool force = false, json = false;
  int threads = 0;
};

void draw_progress(size_t done, size_t total, const std::string& name) {
  static const bool tty = isatty(fileno(stderr)) != 0;
  if (!tty) {
    if (done == total) fmt::print(stderr, "quantized {} tensors\n", total);
    return;
  }
  const int width = 30;
  const int filled = total ? static_cast<int>(width * done / total) : width;
  fmt::print(stderr, "\r[{}{}] {}/{} {:<48.48}", std::string(static_cast<size_t>(filled), '#'),
             std::string(static_cast<size_t>(width - filled), '.'), done, total, name);
  if (done == total) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

int run_quantize(const QuantizeArgs& a) {
  if (a.threads > 0) set_num_threads(a.threads);
  quant::QuantPlan plan;
  if (!a.map.empty()) plan = quant::QuantPlan::from_file(a.map);
  if (!a.config.empty()) plan.fallback = quant::parse_quant_config(a.config);
  AO_CHECK(plan.fallback || !plan.rules.empty(),
           "give --config C or --map FILE (e.g. --config int4wo-g128)");
  const io::ModelFiles in = io::open_model_files(a.in);
  const quant::QuantizeSummary s = quant::quantize_model(in, plan, a.out, a.force, draw_progress);
  if (a.json) {
    auto j = s.json();
    j["config"] = plan.fallback ? plan.fallback->torchao_string() : "(map only)";
    j["short_name"] = plan.fallback ? plan.fallback->short_name() : "";
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print("# ao quantize {} -> {}\n\nconfig: {}\n\n{}", a.in, a.out,
             plan.fallback ? plan.fallback->torchao_string() : "(map only)", s.markdown());
  return 0;
}

const bool registered = register_command(
    {"quantize",
     "Quantize Linear weights (TorchAO configs) and write a HF folder in TorchAO's format", 40,
     [](CLI::App* sub) -> RunFn {
       auto a = std::make_shared<QuantizeArgs>();
       sub->add_option("IN", a->in, "model: HF folder, .safetensors file or llama2.c .bin")
           ->required();
       sub->add_option("OUT", a->out, "output folder (written atomically)")->required();
       sub->add_option(
           "--config,-c", a->config,
           "config: int8wo, int8wo-gG, int8dq, int4wo-gG, int4wo-gG-tp, int4wo-gG-hqq, "
           "intxBwo[-gG][-asym], 8daBw[-gG], fp8wo, "
           "fp8dq-row, fp8dq-tensor, mxfp8, mxfp6, mxfp4, nvfp4, nvfp4wo, or TorchAO's spelling "
           "such as 'Int4WeightOnlyConfig(group_size=128)'");
       sub->add_option("--map", a->map,
                       "JSON file mapping module-name regexes to configs (null = keep), with an "
                       "optional \"default\"");
       sub->add_flag("--force", a->force, "replace OUT if it exists");
       sub->add_flag("--json", a->json, "print the summary as one JSON line instead of markdown");
       sub->add_option("--threads,-t", a->threads, "threads (default: all)");
       return [a] { return run_quantize(*a); };
     }});

}  // namespace
}  // namespace ao::cli

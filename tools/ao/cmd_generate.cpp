// ao generate -m MODEL -p PROMPT -n N — streams generated text to stdout, timing to stderr.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/core/mmap.h"
#include "ao/core/parallel.h"
#include "ao/models/registry.h"
#include "ao/runtime/generate.h"
#include "command.h"

namespace ao::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt, tokenizer;
  int64_t n = 128, ctx = 0;
  runtime::SamplerParams sampler;
  bool no_bos = false, ignore_eos = false, no_echo = false;
};

void add_eos_ids(const nlohmann::json& j, std::vector<int32_t>& s) {
  if (!j.is_object() || !j.contains("eos_token_id")) return;
  const auto& e = j["eos_token_id"];
  if (e.is_number_integer()) s.push_back(e.get<int32_t>());
  if (e.is_array())
    for (const auto& x : e)
      if (x.is_number_integer()) s.push_back(x.get<int32_t>());
}

// EOS ids: the config's and generation_config.json's (all of them when they list several)
// and the tokenizer's; llama2.c checkpoints also stop at BOS, as llama2.c's run.c does.
std::vector<int32_t> stop_tokens(const models::LoadedModel& lm, const text::Tokenizer& tok) {
  const models::CausalLM& m = *lm.model;
  const auto& c = m.config();
  std::vector<int32_t> s = {c.eos_token_id};
  add_eos_ids(c.raw, s);
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(lm.files.path) ? fs::path(lm.files.path)
                                                       : fs::path(lm.files.path).parent_path();
  if (fs::exists(dir / "generation_config.json")) {
    try {
      add_eos_ids(nlohmann::json::parse(read_text_file((dir / "generation_config.json").string())),
                  s);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON: {}", (dir / "generation_config.json").string(), e.what());
    }
  }
  if (tok.eos_id() >= 0) s.push_back(tok.eos_id());
  if (c.model_type == "llama2c") s.push_back(c.bos_token_id);
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

int run_generate(GenerateArgs a) {
  a.sampler.validate();
  models::LoadOptions lo;
  lo.context = a.ctx;
  Timer load_timer;
  auto m = models::load_model(a.model, lo);
  auto tok = models::load_model_tokenizer(m, a.tokenizer);
  const double load_s = load_timer.seconds();

  std::vector<int32_t> prompt = tok->encode(a.prompt, !a.no_bos);
  if (prompt.empty())
    prompt.push_back(m.model->config().bos_token_id);  // empty prompt: start from BOS
  runtime::GenerateOptions o;
  o.max_new_tokens = a.n;
  o.sampler = a.sampler;
  if (!a.ignore_eos) o.stop_tokens = stop_tokens(m, *tok);

  if (!a.no_echo) {
    fmt::print("{}", a.prompt);
    std::fflush(stdout);
  }
  text::TokenStreamDecoder dec(*tok);
  if (!a.no_echo && !a.prompt.empty())
    for (int32_t id : prompt)
      dec.push(id);  // the prompt is already printed; keep the decoder's state
  const auto r = runtime::generate(*m.model, prompt, o, [&](int32_t id) {
    fmt::print("{}", dec.push(id));
    std::fflush(stdout);
    return true;
  });
  fmt::print("{}\n", dec.finish());
  std::fflush(stdout);
  const auto& s = r.stats;
  fmt::print(stderr, "\nload:   {:.2f} s ({}, {} threads)\n", load_s,
             m.model->config().architecture, num_threads());
  fmt::print(stderr, "prompt: {} tokens in {:.3f} s ({:.1f} tokens/s)\n", s.prompt_tokens,
             s.prompt_seconds, s.prompt_tokens_per_second());
  fmt::print(stderr, "decode: {} tokens in {:.3f} s ({:.1f} tokens/s)\n", s.generated_tokens,
             s.decode_seconds, s.decode_tokens_per_second());
  fmt::print(stderr, "stop:   {}\n", s.stop_reason);
  return 0;
}

const bool registered = register_command(
    {"generate", "Generate text from a prompt (streams to stdout)", 20, [](CLI::App* sub) {
       auto a = std::make_shared<GenerateArgs>();
       sub->add_option("-m,--model", a->model, "HF model folder, .safetensors or llama2.c .bin")
           ->required();
       sub->add_option("-p,--prompt", a->prompt, "prompt text (empty: start from BOS)");
       sub->add_option("-n,--n-predict", a->n, "tokens to generate")
           ->capture_default_str()
           ->check(CLI::NonNegativeNumber);
       sub->add_option("--tokenizer", a->tokenizer,
                       "tokenizer file (default: the one next to the model)");
       sub->add_option("-c,--ctx-size", a->ctx, "context size (default: min(model maximum, 4096))")
           ->check(CLI::PositiveNumber);
       sub->add_option("--temp", a->sampler.temperature, "temperature; 0 = greedy")
           ->capture_default_str();
       sub->add_option("--top-k", a->sampler.top_k, "top-k (0 = off)")->capture_default_str();
       sub->add_option("--top-p", a->sampler.top_p, "top-p (1 = off)")->capture_default_str();
       sub->add_option("--min-p", a->sampler.min_p, "min-p (0 = off)")->capture_default_str();
       sub->add_option("--repeat-penalty", a->sampler.repeat_penalty,
                       "repetition penalty (1 = off)")
           ->capture_default_str();
       sub->add_option("--repeat-last-n", a->sampler.repeat_last_n,
                       "tokens the penalty looks back on")
           ->capture_default_str();
       sub->add_option("-s,--seed", a->sampler.seed, "random seed")->capture_default_str();
       sub->add_flag("--no-bos", a->no_bos, "do not prepend BOS to the prompt");
       sub->add_flag("--ignore-eos", a->ignore_eos,
                     "keep generating after an end-of-sequence token");
       sub->add_flag("--no-echo", a->no_echo, "do not print the prompt before the continuation");
       return [a] { return run_generate(*a); };
     }});

}  // namespace
}  // namespace ao::cli

// ao perplexity -m MODEL -f TEXT — perplexity in the style of llama-perplexity, with
// --save-logits / --kl-base to measure how far a (quantized) model drifts from a base run.
// --device cuda scores the same windows with the CudaEngine (all-position prefill logits); the
// protocol, scoring, KL and output are the same code (runtime::evaluate_perplexity).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/core/mmap.h"
#include "ao/models/registry.h"
#include "ao/runtime/perplexity.h"
#include "command.h"
#include "cuda_model.h"

namespace ao::cli {
namespace {

struct PerplexityArgs {
  std::string model, text_file, tokenizer, protocol = "llama", save_logits, kl_base;
  int64_t ctx = 0, chunks = -1, max_chars = -1;
  bool json = false;
  std::string device = "cpu", cuda_format = "bf16";
  const CLI::Option* cuda_format_opt = nullptr;  // was --cuda-format given (cpu: an error)
};

// Tokenizes the text as the protocol wants it, scores it with `model` (on `backend`: "cpu",
// "cuda NVIDIA H200, bf16", ...) and prints the table or JSON.
int score_and_print(const PerplexityArgs& a, runtime::PerplexityOptions o,
                    const text::Tokenizer& tok, const runtime::PerplexityModel& model,
                    const std::string& backend) {
  const bool paragraphs = o.mode == runtime::PerplexityMode::bos_windows;
  std::FILE* progress = a.json ? stderr : stdout;

  Timer t;
  const std::string text = read_text_file(a.text_file);
  std::vector<int32_t> tokens;
  if (paragraphs) {
    tokens =
        runtime::tokenize_paragraphs(tok, text, a.max_chars >= 0 ? size_t(a.max_chars) : 100000);
  } else {
    const std::string_view view = a.max_chars >= 0
                                      ? std::string_view(text).substr(0, size_t(a.max_chars))
                                      : std::string_view(text);
    tokens = tok.encode(view, true);  // as llama-perplexity: BOS first, chunk boundaries match
  }
  fmt::print(stderr, "perplexity: tokenized {} into {} tokens in {:.2f} s; model on {}\n",
             a.text_file, tokens.size(), t.seconds(), backend);
  o.on_chunk = [&](const runtime::ChunkProgress& p) {
    if (p.chunk == 1)
      fmt::print(progress, "perplexity: {} chunks, n_ctx={}, mode {}, {:.2f} s per chunk\n",
                 p.n_chunks, o.ctx, runtime::perplexity_mode_name(o.mode), p.seconds);
    fmt::print(progress, "[{}]{:.4f},", p.chunk, p.ppl);
    if (p.chunk == p.n_chunks || p.chunk % 16 == 0) fmt::print(progress, "\n");
    std::fflush(progress);
  };
  const auto r = runtime::evaluate_perplexity(model, tokens, o);

  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.model;
    j["text"] = a.text_file;
    j["protocol"] = a.protocol;
    j["mode"] = runtime::perplexity_mode_name(o.mode);
    j["device"] = a.device;
    j["backend"] = backend;
    j["ctx"] = o.ctx;
    j["chunks"] = r.n_chunks;
    j["tokens"] = r.n_tokens;
    j["nll_sum"] = r.nll_sum;
    j["mean_nll"] = r.mean_nll;
    j["ppl"] = r.ppl;
    j["ppl_stderr"] = r.ppl_stderr;
    j["seconds"] = r.seconds;
    if (r.kl) {
      const auto& k = *r.kl;
      j["kl"] = {{"base", a.kl_base},
                 {"mean_kl", k.mean_kl},
                 {"kl_stderr", k.kl_stderr},
                 {"median_kl", k.median_kl},
                 {"kl_p99", k.kl_p99},
                 {"max_kl", k.max_kl},
                 {"top1_agreement", k.top1_agreement},
                 {"top1_stderr", k.top1_stderr},
                 {"base_ppl", k.base_ppl},
                 {"ppl", k.ppl},
                 {"delta_ppl", k.delta_ppl()}};
    }
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("\nFinal estimate: PPL = {:.4f} +/- {:.5f}\n", r.ppl, r.ppl_stderr);
  fmt::print("tokens: {}, mean NLL: {:.4f}, {:.2f} s ({:.1f} tokens/s)\n", r.n_tokens, r.mean_nll,
             r.seconds, r.n_tokens / std::max(r.seconds, 1e-9));
  if (!a.save_logits.empty())
    fmt::print("saved log-probs of {} tokens to {}\n", r.n_tokens, a.save_logits);
  if (r.kl) {
    const auto& k = *r.kl;
    fmt::print("\n====== Perplexity statistics ======\n");
    fmt::print("Mean PPL(Q)     : {:10.6f}\n", k.ppl);
    fmt::print("Mean PPL(base)  : {:10.6f}\n", k.base_ppl);
    fmt::print("Delta PPL       : {:10.6f}\n", k.delta_ppl());
    fmt::print("\n====== KL divergence statistics ======\n");
    fmt::print("Mean    KLD: {:10.6f} +/- {:.6f}\n", k.mean_kl, k.kl_stderr);
    fmt::print("Maximum KLD: {:10.6f}\n", k.max_kl);
    fmt::print("99.0%   KLD: {:10.6f}\n", k.kl_p99);
    fmt::print("Median  KLD: {:10.6f}\n", k.median_kl);
    fmt::print("\n====== Token probability statistics ======\n");
    fmt::print("Same top p: {:.3f} +/- {:.3f} %\n", 100 * k.top1_agreement, 100 * k.top1_stderr);
  }
  return 0;
}

// --device cuda: the CudaEngine built as `ao generate --device cuda` builds it (TorchAO
// checkpoints keep their quantized weights); each window is a prefill from an empty cache that
// returns the logits of every position.
int run_perplexity_cuda(const PerplexityArgs& a, const runtime::PerplexityOptions& o) {
#ifdef AO_WITH_CUDA
  // The KV cache holds one window; perplexity never decodes, so no CUDA graph is captured.
  const CudaModel cm =
      load_cuda_model({"perplexity", a.model, a.tokenizer, a.cuda_format, o.ctx, false});
  cm.print_weight_mapping();
  runtime::PerplexityModel model;
  model.vocab_size = cm.config().vocab_size;
  model.context_size = cm.ctx();
  model.bos_id = cm.config().bos_token_id;
  model.window_logits = [&cm](std::span<const int32_t> input, float* logits) {
    cm.engine->reset();
    cm.engine->prefill_all_logits(std::vector<int32_t>(input.begin(), input.end()), logits);
  };
  return score_and_print(a, o, *cm.tokenizer, model, cm.description());
#else
  (void)a, (void)o;
  throw NotSupported(
      "ao perplexity --device cuda: this build has no CUDA (configure with -DAO_CUDA=ON)");
#endif
}

int run_perplexity(const PerplexityArgs& a) {
  AO_CHECK(a.protocol == "llama" || a.protocol == "paragraphs",
           "--protocol must be 'llama' or 'paragraphs', got '{}'", a.protocol);
  AO_CHECK(a.device == "cpu" || a.device == "cuda",
           "perplexity: --device must be cpu or cuda, got '{}'", a.device);
  AO_CHECK(a.device == "cuda" || a.cuda_format_opt == nullptr || a.cuda_format_opt->count() == 0,
           "perplexity: --cuda-format applies only with --device cuda");
  const bool paragraphs = a.protocol == "paragraphs";
  runtime::PerplexityOptions o;
  o.mode = paragraphs ? runtime::PerplexityMode::bos_windows : runtime::PerplexityMode::llama;
  o.ctx = a.ctx > 0 ? a.ctx : (paragraphs ? 256 : 512);
  o.max_chunks = a.chunks;
  o.save_logprobs_path = a.save_logits;
  o.kl_base_path = a.kl_base;
  if (a.device == "cuda") return run_perplexity_cuda(a, o);

  models::LoadOptions lo;
  lo.context = o.ctx;
  auto m = models::load_model(a.model, lo);
  auto tok = models::load_model_tokenizer(m, a.tokenizer);
  return score_and_print(a, o, *tok, runtime::perplexity_model(*m.model), "cpu");
}

const bool registered = register_command(
    {"perplexity",
     "Perplexity of a model on a text file (llama-perplexity style), KL divergence vs a base run",
     30, [](CLI::App* sub) {
       auto a = std::make_shared<PerplexityArgs>();
       sub->add_option("-m,--model", a->model, "HF model folder, .safetensors or llama2.c .bin")
           ->required();
       sub->add_option("-f,--file", a->text_file, "text file to score")->required();
       sub->add_option("--tokenizer", a->tokenizer,
                       "tokenizer file (default: the one next to the model)");
       sub->add_option("--ctx", a->ctx,
                       "tokens per chunk (default 512; 256 with --protocol paragraphs)")
           ->check(CLI::PositiveNumber);
       sub->add_option("--chunks", a->chunks, "score at most this many chunks")
           ->check(CLI::PositiveNumber);
       sub->add_option(
              "--protocol", a->protocol,
              "llama: whole text, chunks of --ctx with BOS, second half scored; paragraphs: first "
              "--max-chars characters split on blank lines, each paragraph + newline token, "
              "windows of "
              "ctx-1 tokens after BOS, all scored (the stories260K golden protocol)")
           ->capture_default_str();
       sub->add_option("--max-chars", a->max_chars,
                       "use only the first N characters (paragraphs default: 100000)")
           ->check(CLI::NonNegativeNumber);
       sub->add_option("--save-logits", a->save_logits,
                       "save this run's log-probs as a base for --kl-base");
       sub->add_option("--kl-base", a->kl_base,
                       "compare with a run saved by --save-logits: KL, top-1, delta PPL");
       sub->add_flag("--json", a->json, "print JSON (progress goes to stderr)");
       sub->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
       a->cuda_format_opt =
           sub->add_option("--cuda-format", a->cuda_format,
                           kCudaFormatHelp)
               ->capture_default_str();
       return [a] { return run_perplexity(*a); };
     }});

}  // namespace
}  // namespace ao::cli

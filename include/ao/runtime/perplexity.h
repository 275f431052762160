// Perplexity in the style of llama-perplexity, plus KL divergence against a saved base run
// (how quantization damage is reported: mean KL, top-1 agreement, delta PPL).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ao/core/mmap.h"
#include "ao/models/causal_lm.h"
#include "ao/text/tokenizer.h"

namespace ao::runtime {

enum class PerplexityMode {
  // llama-perplexity: the text's tokens are cut into chunks of ctx tokens, each chunk's
  // first token replaced by BOS, and the second half of each chunk is scored.
  llama,
  // Non-overlapping windows of ctx-1 tokens, each fed after a BOS; every token of a full
  // window is scored, a partial last window is dropped (the stories260K protocol of
  // ../shared/data/README.md with ctx = 256: 46731 tokens of text, 46665 scored, PPL 4.480).
  bos_windows,
};
PerplexityMode perplexity_mode_from_name(std::string_view name);  // "llama", "bos-windows"
const char* perplexity_mode_name(PerplexityMode m);

// The stories260K text protocol: the first max_chars characters (UTF-8 code points) of
// `text`, split on blank lines into paragraphs; each non-empty paragraph (trimmed of
// surrounding whitespace) is encoded without BOS and followed by the newline token.
std::vector<int32_t> tokenize_paragraphs(const text::Tokenizer& tok, std::string_view text,
                                         size_t max_chars);

// Mean KL divergence KL(base || model), top-1 agreement and both perplexities over the
// same scored tokens.
struct KlStats {
  int64_t n = 0;
  double mean_kl = 0, kl_stderr = 0, max_kl = 0, kl_p99 = 0, median_kl = 0;
  double top1_agreement = 0, top1_stderr = 0;  // fraction of tokens where both argmaxes agree
  double base_ppl = 0, ppl = 0;
  double delta_ppl() const { return ppl - base_ppl; }
};

class KlAccumulator {
 public:
  // Log-probabilities of one position (base and model, same vocabulary) and the true token;
  // the base's exact log-prob of the target when known (saved files round the others).
  void add(std::span<const float> base_logprobs, std::span<const float> logprobs, int32_t target,
           std::optional<double> base_target_logprob = std::nullopt);
  // For callers that computed the per-token terms themselves (e.g. in parallel).
  void add_terms(double kl, bool top1_same, double base_nll, double nll);
  KlStats stats() const;

 private:
  std::vector<double> kl_;
  int64_t same_ = 0;
  double base_nll_ = 0, nll_ = 0;
};

// KL(base || model) of one position, with base renormalized (its saved values are rounded).
double kl_divergence(std::span<const float> base_logprobs, std::span<const float> logprobs);

// Saved log-probabilities of a run ("--save-logits"): a header, then per scored token its
// target id, the target's exact log-prob, and all log-probabilities quantized to 16 bits
// over [max - 24, max] (as llama-perplexity's base files do; lower ones read back as
// -inf, i.e. probability ~0). Written atomically.
class LogprobWriter {
 public:
  LogprobWriter(const std::string& path, int32_t vocab, int64_t n_tokens, int64_t ctx,
                PerplexityMode mode);
  ~LogprobWriter();
  void add(std::span<const float> logprobs, int32_t target);
  void commit();  // throws unless exactly n_tokens rows were added

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class LogprobReader {
 public:
  explicit LogprobReader(const std::string& path);  // validates header and size
  int32_t vocab() const { return vocab_; }
  int64_t n_tokens() const { return n_tokens_; }
  int64_t ctx() const { return ctx_; }
  PerplexityMode mode() const { return mode_; }
  // Row i: fills logprobs (size vocab) and returns the target id (and its exact log-prob).
  int32_t row(int64_t i, std::span<float> logprobs, float* target_logprob = nullptr) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  int32_t vocab_ = 0;
  int64_t n_tokens_ = 0, ctx_ = 0;
  PerplexityMode mode_ = PerplexityMode::llama;
};

struct ChunkProgress {
  int64_t chunk = 0, n_chunks = 0;  // chunk is 1-based
  int64_t tokens_scored = 0;
  double ppl = 0;      // over all tokens scored so far
  double seconds = 0;  // since the start
};

struct PerplexityOptions {
  PerplexityMode mode = PerplexityMode::llama;
  int64_t ctx = 512;
  int64_t max_chunks = -1;         // -1: all
  int32_t bos_id = -1;             // -1: the model config's bos_token_id
  std::string save_logprobs_path;  // "" : don't save
  std::string kl_base_path;        // "" : no KL comparison
  std::function<void(const ChunkProgress&)> on_chunk;
};

struct PerplexityResult {
  int64_t n_tokens = 0;  // tokens scored
  int64_t n_chunks = 0;
  double nll_sum = 0;
  double mean_nll = 0;
  double ppl = 0, ppl_stderr = 0;
  double seconds = 0;
  std::optional<KlStats> kl;
};

// A model as the perplexity driver sees it, whatever runs it (the CPU CausalLM, the CUDA
// engine): its vocabulary, the tokens one window may hold, its BOS id, and the logits of every
// position of one window.
struct PerplexityModel {
  int64_t vocab_size = 0;
  int64_t context_size = 0;
  int32_t bos_id = -1;
  // Feeds `input` from an empty cache; fills logits [input.size(), vocab_size] (f32, row-major)
  // with the logits after each token.
  std::function<void(std::span<const int32_t> input, float* logits)> window_logits;
};
// The CPU model: reset() and forward() with all-position logits.
PerplexityModel perplexity_model(models::CausalLM& model);

// Scores `tokens`, the whole text as the protocol wants it: for `llama` as llama-perplexity
// tokenizes it (with its leading BOS, so chunk boundaries match), for `bos_windows` without
// BOS. The model's context must hold ctx tokens.
PerplexityResult evaluate_perplexity(const PerplexityModel& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& opts);
// The same on the CPU model (left reset afterwards).
PerplexityResult evaluate_perplexity(models::CausalLM& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& opts);

}  // namespace ao::runtime

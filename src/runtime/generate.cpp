#include "ao/runtime/generate.h"

#include <algorithm>

#include "ao/core/error.h"
#include "ao/core/log.h"

namespace ao::runtime {

double GenerateStats::decode_tokens_per_second() const {
  // The first generated token comes from the prefill logits; later ones each cost a forward.
  const int64_t steps = std::max<int64_t>(generated_tokens - 1, 0);
  return decode_seconds > 0 ? steps / decode_seconds : 0;
}

GenerateResult generate(models::CausalLM& model, std::span<const int32_t> prompt,
                        const GenerateOptions& opts, const std::function<bool(int32_t)>& on_token) {
  AO_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  AO_CHECK(opts.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got {}",
           opts.max_new_tokens);
  const int64_t ctx = model.context_size(), V = model.vocab_size();
  AO_CHECK(static_cast<int64_t>(prompt.size()) < ctx,
           "generate: the prompt has {} tokens but the context holds {} (prompt + at least one new "
           "token); "
           "use a shorter prompt or a larger --ctx-size",
           prompt.size(), ctx);
  for (size_t i = 0; i < prompt.size(); ++i)
    AO_CHECK(prompt[i] >= 0 && prompt[i] < V,
             "generate: prompt token {} at position {} is outside the vocabulary of {}", prompt[i],
             i, V);
  Sampler sampler(opts.sampler);
  GenerateResult r;
  r.stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits(static_cast<size_t>(V));

  model.reset();
  Timer t;
  model.forward(prompt.data(), static_cast<int64_t>(prompt.size()), logits.data(), false);
  r.stats.prompt_seconds = t.seconds();
  r.stats.stop_reason = "length";
  t.reset();
  for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
    if (i > 0) {
      if (model.n_past() >= ctx) {
        r.stats.stop_reason = "context";
        break;
      }
      model.forward(&history.back(), 1, logits.data(), false);
    }
    const int32_t next = sampler.sample(logits, history);
    if (std::find(opts.stop_tokens.begin(), opts.stop_tokens.end(), next) !=
        opts.stop_tokens.end()) {
      r.stats.stop_reason = "stop_token";
      break;
    }
    history.push_back(next);
    r.tokens.push_back(next);
    r.stats.generated_tokens = static_cast<int64_t>(r.tokens.size());
    if (on_token && !on_token(next)) {
      r.stats.stop_reason = "callback";
      break;
    }
  }
  r.stats.decode_seconds = t.seconds();
  return r;
}

}  // namespace ao::runtime

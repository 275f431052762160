// The generation loop: prefill the prompt, then sample one token at a time, streaming each
// to a callback, until max_new_tokens, a stop token (EOS) or the end of the context.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ao/models/causal_lm.h"
#include "ao/runtime/sampler.h"

namespace ao::runtime {

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplerParams sampler;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one (not streamed)
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prompt_seconds = 0;  // prefill
  double decode_seconds = 0;  // sampling + forward of every generated token after the first
  std::string stop_reason;    // "length", "stop_token", "context", "callback"
  double prompt_tokens_per_second() const {
    return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0;
  }
  double decode_tokens_per_second() const;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (without the prompt or the stop token)
  GenerateStats stats;
};

// on_token(id) is called for every generated token as soon as it is sampled; returning
// false stops generation. Throws ao::Error if the prompt is empty or does not fit the
// context. The model's cache is reset first.
GenerateResult generate(models::CausalLM& model, std::span<const int32_t> prompt,
                        const GenerateOptions& opts,
                        const std::function<bool(int32_t)>& on_token = {});

}  // namespace ao::runtime

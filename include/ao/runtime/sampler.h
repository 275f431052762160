// Token sampling from logits, in llama.cpp's order: repetition penalty, top-k, top-p,
// min-p, temperature, then a draw from the softmax. temperature <= 0 means greedy (argmax
// after the repetition penalty). A fixed seed gives a reproducible sequence.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace ao::runtime {

struct SamplerParams {
  float temperature = 0.8f;     // <= 0: greedy
  int top_k = 40;               // <= 0: all tokens
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;  // 1: off; > 1 discourages tokens among the last repeat_last_n
  int repeat_last_n = 64;
  uint64_t seed = 0xA0A0A0A0ull;

  static SamplerParams greedy() {
    SamplerParams p;
    p.temperature = 0.0f;
    return p;
  }
  void validate() const;  // throws ao::Error naming the bad parameter
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  const SamplerParams& params() const { return p_; }
  // `logits` may be modified (penalties are applied in place). `history` is the sequence
  // so far (prompt + generated) for the repetition penalty.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t argmax(std::span<const float> logits);  // first index of the maximum

}  // namespace ao::runtime

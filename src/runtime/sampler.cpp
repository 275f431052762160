#include "ao/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "ao/core/error.h"

namespace ao::runtime {

void SamplerParams::validate() const {
  AO_CHECK(std::isfinite(temperature), "sampler: temperature must be finite, got {}", temperature);
  AO_CHECK(top_p > 0.0f && top_p <= 1.0f, "sampler: top_p must be in (0, 1], got {}", top_p);
  AO_CHECK(min_p >= 0.0f && min_p <= 1.0f, "sampler: min_p must be in [0, 1], got {}", min_p);
  AO_CHECK(repeat_penalty > 0.0f && std::isfinite(repeat_penalty),
           "sampler: repeat_penalty must be positive, got {}", repeat_penalty);
  AO_CHECK(repeat_last_n >= 0, "sampler: repeat_last_n must be >= 0, got {}", repeat_last_n);
}

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) { p_.validate(); }

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  AO_CHECK(!logits.empty(), "sampler: empty logits");
  const int64_t V = static_cast<int64_t>(logits.size());
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n > 0) {
    // As llama.cpp / CTRL: divide positive logits, multiply negative ones, once per token.
    const size_t n = std::min<size_t>(history.size(), static_cast<size_t>(p_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - n, history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= V) continue;
      float& l = logits[t];
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  if (p_.temperature <= 0.0f) return argmax(logits);

  cand_.clear();
  cand_.reserve(V);
  for (int64_t i = 0; i < V; ++i) cand_.emplace_back(logits[i], static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = p_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
    cand_.resize(keep);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Probabilities at temperature 1 for the top-p / min-p cuts (llama.cpp applies them first).
  std::vector<double> prob(keep);
  const double mx = cand_[0].first;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (prob[i] = std::exp(double(cand_[i].first) - mx));
  for (auto& q : prob) q /= sum;
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t i = 0;
    for (; i < keep; ++i) {
      cum += prob[i];
      if (cum >= p_.top_p) break;
    }
    keep = std::min(keep, i + 1);
  }
  if (p_.min_p > 0.0f) {
    const double floor = p_.min_p * prob[0];
    size_t i = 1;
    while (i < keep && prob[i] >= floor) ++i;
    keep = i;
  }
  // Temperature, then draw.
  std::vector<double> w(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i)
    total += (w[i] = std::exp((double(cand_[i].first) - mx) / p_.temperature));
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_), acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += w[i];
    if (r < acc) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace ao::runtime

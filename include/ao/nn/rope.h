// Rotary position embedding. HF convention rotates the two halves of each head
// (x[i], x[i + d/2]); llama2.c rotates interleaved pairs (x[2i], x[2i+1]). Frequencies
// theta^(-2i/d), optionally rescaled as Llama 3 ("llama3") or by position interpolation
// ("linear"). Angles are computed as float(pos) * inv_freq in f32, as PyTorch does.
#pragma once

#include <cstdint>
#include <vector>

#include "ao/io/model_config.h"

namespace ao::nn {

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(int head_dim, float theta, bool interleaved, const io::RopeScaling& scaling = {});

  int head_dim() const { return head_dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  // x: [T, n_heads, head_dim]; row t is at position pos0 + t. In place.
  void apply(float* x, int64_t T, int64_t n_heads, int64_t pos0) const;

 private:
  int head_dim_ = 0;
  bool interleaved_ = false;
  std::vector<float> inv_freq_;  // [head_dim / 2]
};

}  // namespace ao::nn

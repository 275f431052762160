#include "ao/nn/rope.h"

#include <cmath>
#include <numbers>

#include "ao/core/error.h"

namespace ao::nn {

RotaryEmbedding::RotaryEmbedding(int head_dim, float theta, bool interleaved,
                                 const io::RopeScaling& sc)
    : head_dim_(head_dim), interleaved_(interleaved) {
  AO_CHECK(head_dim > 0 && head_dim % 2 == 0, "RoPE: head_dim {} must be positive and even",
           head_dim);
  const int half = head_dim / 2;
  inv_freq_.resize(half);
  for (int i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq_[i] = static_cast<float>(1.0 / std::pow(double(theta), double(e)));
  }
  if (sc.type == "linear") {
    for (float& f : inv_freq_) f /= sc.factor;
  } else if (sc.type == "llama3") {
    // transformers' _compute_llama3_parameters.
    const double old_ctx = sc.original_max_position_embeddings;
    const double low_wavelen = old_ctx / sc.low_freq_factor,
                 high_wavelen = old_ctx / sc.high_freq_factor;
    for (float& f : inv_freq_) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / sc.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_ctx / wavelen - sc.low_freq_factor) / (sc.high_freq_factor - sc.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / sc.factor + smooth * f);
      }
    }
  } else {
    AO_CHECK(sc.type.empty(), "RoPE: unsupported scaling type '{}'", sc.type);
  }
}

void RotaryEmbedding::apply(float* x, int64_t T, int64_t n_heads, int64_t pos0) const {
  const int half = head_dim_ / 2;
  std::vector<float> cs(half), sn(half);
  for (int64_t t = 0; t < T; ++t) {
    const float p = static_cast<float>(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float angle = p * inv_freq_[i];
      cs[i] = static_cast<float>(std::cos(double(angle)));
      sn[i] = static_cast<float>(std::sin(double(angle)));
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim_;
      if (interleaved_) {
        for (int i = 0; i < half; ++i) {
          const float a = v[2 * i], b = v[2 * i + 1];
          v[2 * i] = a * cs[i] - b * sn[i];
          v[2 * i + 1] = a * sn[i] + b * cs[i];
        }
      } else {
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    }
  }
}

}  // namespace ao::nn

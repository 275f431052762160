// Grouped-query self-attention with RoPE and a KV cache, and the SwiGLU MLP.
#pragma once

#include <string>
#include <vector>

#include "ao/nn/linear.h"
#include "ao/nn/rope.h"

namespace ao::nn {

// Keys and values of every layer: [n_layers][n_kv_heads, capacity, head_dim] f32.
class KVCache {
 public:
  KVCache() = default;
  KVCache(int n_layers, int n_kv_heads, int head_dim, int64_t capacity);
  int64_t capacity() const { return capacity_; }
  float* keys(int layer) { return k_.data() + layer * layer_floats_; }
  float* values(int layer) { return v_.data() + layer * layer_floats_; }
  size_t nbytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  int64_t capacity_ = 0;
  int64_t layer_floats_ = 0;
  std::vector<float> k_, v_;
};

struct AttentionConfig {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int sliding_window = 0;  // 0: none
};

class Attention {
 public:
  Attention() = default;
  // name: "model.layers.3.self_attn"; the projections carry their own full names.
  Attention(std::string name, const AttentionConfig& cfg, Linear q, Linear k, Linear v, Linear o,
            const RotaryEmbedding* rope);

  const std::string& name() const { return name_; }
  Linear& q_proj() { return q_; }
  Linear& k_proj() { return k_; }
  Linear& v_proj() { return v_; }
  Linear& o_proj() { return o_; }
  const AttentionConfig& config() const { return cfg_; }

  // Floats of scratch forward() needs for T tokens.
  int64_t scratch_floats(int64_t T) const;
  // x: [T, dim] at positions pos0 .. pos0+T-1 (written into the cache of `layer`);
  // out: [T, dim].
  void forward(const float* x, int64_t T, int64_t pos0, KVCache& cache, int layer, float* out,
               float* scratch) const;

 private:
  std::string name_;
  AttentionConfig cfg_;
  Linear q_, k_, v_, o_;
  const RotaryEmbedding* rope_ = nullptr;
};

// down(silu(gate(x)) * up(x))
class SwiGLUMLP {
 public:
  SwiGLUMLP() = default;
  SwiGLUMLP(std::string name, Linear gate, Linear up, Linear down);
  const std::string& name() const { return name_; }
  Linear& gate_proj() { return gate_; }
  Linear& up_proj() { return up_; }
  Linear& down_proj() { return down_; }
  int64_t scratch_floats(int64_t T) const { return 2 * T * gate_.out_features(); }
  void forward(const float* x, int64_t T, float* out, float* scratch) const;

 private:
  std::string name_;
  Linear gate_, up_, down_;
};

}  // namespace ao::nn

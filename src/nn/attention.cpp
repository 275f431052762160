#include "ao/nn/attention.h"

#include <cstring>

#include "ao/core/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"

namespace ao::nn {

KVCache::KVCache(int n_layers, int n_kv_heads, int head_dim, int64_t capacity)
    : capacity_(capacity), layer_floats_(int64_t(n_kv_heads) * capacity * head_dim) {
  k_.assign(static_cast<size_t>(n_layers * layer_floats_), 0.0f);
  v_.assign(static_cast<size_t>(n_layers * layer_floats_), 0.0f);
}

Attention::Attention(std::string name, const AttentionConfig& cfg, Linear q, Linear k, Linear v,
                     Linear o, const RotaryEmbedding* rope)
    : name_(std::move(name)),
      cfg_(cfg),
      q_(std::move(q)),
      k_(std::move(k)),
      v_(std::move(v)),
      o_(std::move(o)),
      rope_(rope) {
  const int64_t qd = int64_t(cfg.n_heads) * cfg.head_dim,
                kvd = int64_t(cfg.n_kv_heads) * cfg.head_dim;
  AO_CHECK(cfg.n_kv_heads > 0 && cfg.n_heads % cfg.n_kv_heads == 0,
           "{}: {} heads is not a multiple of {} kv heads", name_, cfg.n_heads, cfg.n_kv_heads);
  AO_CHECK(q_.out_features() == qd, "{}: q_proj has {} outputs, expected {}", name_,
           q_.out_features(), qd);
  AO_CHECK(k_.out_features() == kvd, "{}: k_proj has {} outputs, expected {}", name_,
           k_.out_features(), kvd);
  AO_CHECK(v_.out_features() == kvd, "{}: v_proj has {} outputs, expected {}", name_,
           v_.out_features(), kvd);
  AO_CHECK(o_.in_features() == qd, "{}: o_proj has {} inputs, expected {}", name_, o_.in_features(),
           qd);
}

int64_t Attention::scratch_floats(int64_t T) const {
  const int64_t qd = int64_t(cfg_.n_heads) * cfg_.head_dim,
                kvd = int64_t(cfg_.n_kv_heads) * cfg_.head_dim;
  return T * (2 * qd + 2 * kvd);
}

void Attention::forward(const float* x, int64_t T, int64_t pos0, KVCache& cache, int layer,
                        float* out, float* scratch) const {
  const int64_t H = cfg_.n_heads, KV = cfg_.n_kv_heads, hd = cfg_.head_dim, cap = cache.capacity();
  AO_CHECK(pos0 + T <= cap, "{}: positions up to {} exceed the context size {}", name_, pos0 + T,
           cap);
  float* q = scratch;
  float* k = q + T * H * hd;
  float* v = k + T * KV * hd;
  float* att = v + T * KV * hd;
  q_.forward(x, T, q);
  k_.forward(x, T, k);
  v_.forward(x, T, v);
  rope_->apply(q, T, H, pos0);
  rope_->apply(k, T, KV, pos0);
  float* kc = cache.keys(layer);
  float* vc = cache.values(layer);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < KV; ++h) {
      std::memcpy(kc + (h * cap + pos0 + t) * hd, k + (t * KV + h) * hd, sizeof(float) * hd);
      std::memcpy(vc + (h * cap + pos0 + t) * hd, v + (t * KV + h) * hd, sizeof(float) * hd);
    }
  kernels::cpu::AttentionShape s{cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim, cap,
                                 cfg_.sliding_window};
  kernels::cpu::attention_f32(q, kc, vc, att, T, pos0, s);
  o_.forward(att, T, out);
}

SwiGLUMLP::SwiGLUMLP(std::string name, Linear gate, Linear up, Linear down)
    : name_(std::move(name)), gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {
  AO_CHECK(gate_.out_features() == up_.out_features() && gate_.in_features() == up_.in_features(),
           "{}: gate_proj [{}, {}] and up_proj [{}, {}] differ", name_, gate_.out_features(),
           gate_.in_features(), up_.out_features(), up_.in_features());
  AO_CHECK(
      down_.in_features() == gate_.out_features() && down_.out_features() == gate_.in_features(),
      "{}: down_proj is [{}, {}], expected [{}, {}]", name_, down_.out_features(),
      down_.in_features(), gate_.in_features(), gate_.out_features());
}

void SwiGLUMLP::forward(const float* x, int64_t T, float* out, float* scratch) const {
  const int64_t F = gate_.out_features();
  float* g = scratch;
  float* u = scratch + T * F;
  gate_.forward(x, T, g);
  up_.forward(x, T, u);
  kernels::cpu::silu_mul_f32(g, u, T * F);
  down_.forward(g, T, out);
}

}  // namespace ao::nn

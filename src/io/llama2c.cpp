#include "ao/io/llama2c.h"

#include <cstring>

#include "ao/core/error.h"

namespace ao::io {

Llama2cCheckpoint parse_llama2c(const uint8_t* data, size_t size, std::shared_ptr<void> owner,
                                const std::string& ctx) {
  AO_CHECK(size >= 28, "{}: {} bytes is too short for a llama2.c header (28 bytes)", ctx, size);
  int32_t h[7];
  std::memcpy(h, data, sizeof(h));
  const char* names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? std::abs(int64_t{h[i]}) : h[i];
    AO_CHECK(v > 0 && v <= (1 << 20), "{}: header field {} = {} is out of range (not a llama2.c checkpoint?)",
             ctx, names[i], h[i]);
  }
  Llama2cCheckpoint ck;
  ModelConfig& c = ck.config;
  c.architecture = "llama2.c";
  c.model_type = "llama2c";
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tie_embeddings = h[5] > 0;
  c.vocab_size = std::abs(h[5]);
  c.max_seq_len = h[6];
  AO_CHECK(c.dim % c.n_heads == 0, "{}: dim {} is not divisible by n_heads {}", ctx, c.dim, c.n_heads);
  AO_CHECK(c.n_kv_heads <= c.n_heads && c.n_heads % c.n_kv_heads == 0,
           "{}: n_heads {} is not a multiple of n_kv_heads {}", ctx, c.n_heads, c.n_kv_heads);
  c.head_dim = c.dim / c.n_heads;
  AO_CHECK(c.head_dim % 2 == 0, "{}: head size {} must be even", ctx, c.head_dim);
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_interleaved = true;
  c.torch_dtype = "float32";
  c.bos_token_id = 1;
  c.eos_token_id = 2;

  const int64_t D = c.dim, H = c.hidden_dim, L = c.n_layers, V = c.vocab_size;
  const int64_t KV = int64_t(c.n_kv_heads) * c.head_dim, S = c.max_seq_len, hs = c.head_dim;
  const int64_t floats = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 2 * L * H * D +
                         L * D * H + D + 2 * S * hs / 2 + (c.tie_embeddings ? 0 : V * D);
  const uint64_t expect = 28 + uint64_t(floats) * 4;
  AO_CHECK(size == expect,
           "{}: file has {} bytes but a llama2.c checkpoint with this header (dim {}, hidden {}, layers {}, "
           "heads {}/{}, vocab {}, seq_len {}) has {} bytes",
           ctx, size, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len,
           expect);

  auto* base = const_cast<float*>(reinterpret_cast<const float*>(data + 28));
  int64_t pos = 0;
  auto take = [&](const Shape& shape) {
    float* p = base + pos;
    pos += shape_numel(shape);
    return p;
  };
  auto add = [&](const std::string& name, float* p, const Shape& shape) {
    ck.tensors.push_back({name, Tensor::from_blob(p, shape, DType::f32, owner)});
  };
  auto per_layer = [&](const std::string& suffix, const Shape& one) {
    float* p = take([&] { Shape s = one; s.insert(s.begin(), L); return s; }());
    for (int64_t l = 0; l < L; ++l)
      add("model.layers." + std::to_string(l) + "." + suffix, p + l * shape_numel(one), one);
  };
  float* emb = take({V, D});
  add("model.embed_tokens.weight", emb, {V, D});
  per_layer("input_layernorm.weight", {D});
  per_layer("self_attn.q_proj.weight", {D, D});
  per_layer("self_attn.k_proj.weight", {KV, D});
  per_layer("self_attn.v_proj.weight", {KV, D});
  per_layer("self_attn.o_proj.weight", {D, D});
  per_layer("post_attention_layernorm.weight", {D});
  per_layer("mlp.gate_proj.weight", {H, D});
  per_layer("mlp.down_proj.weight", {D, H});
  per_layer("mlp.up_proj.weight", {H, D});
  add("model.norm.weight", take({D}), {D});
  take({S, hs / 2});  // freq_cis_real (unused: RoPE is computed)
  take({S, hs / 2});  // freq_cis_imag
  if (!c.tie_embeddings) add("lm_head.weight", take({V, D}), {V, D});
  return ck;
}

Llama2cCheckpoint load_llama2c(const std::string& path) {
  auto file = MappedFile::open(path);
  return parse_llama2c(file->data(), file->size(), file, path);
}

}  // namespace ao::io

// llama2.c "legacy" checkpoints: 7 x int32 header (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative = untied classifier), seq_len), then fp32 tensors:
// token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
// wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
// w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim], freq_cis_real/imag
// [seq_len, head_size/2] (skipped), wcls [vocab, dim] if untied.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ao/core/mmap.h"
#include "ao/io/model_config.h"
#include "ao/io/safetensors.h"

namespace ao::io {

struct Llama2cCheckpoint {
  ModelConfig config;
  // Tensors under HF names (model.embed_tokens.weight, model.layers.0.self_attn.q_proj.weight,
  // ...), zero-copy views into the mapped file. Q/K projection rows stay in llama2.c's
  // interleaved RoPE order; config.rope_interleaved is set.
  std::vector<NamedTensor> tensors;
};

Llama2cCheckpoint load_llama2c(const std::string& path);
// Parses from memory (file name only for messages); the tensors view `owner`'s bytes.
Llama2cCheckpoint parse_llama2c(const uint8_t* data, size_t size, std::shared_ptr<void> owner,
                                const std::string& context);

}  // namespace ao::io

// The Llama family (Llama 2/3, Mistral, Qwen2, TinyLlama, llama2.c) assembled from nn
// modules: embedding, N x [RMSNorm, GQA attention + RoPE, RMSNorm, SwiGLU MLP], RMSNorm,
// lm_head (tied to the embedding or not). fp32 compute on the CPU.
#pragma once

#include <map>

#include "ao/models/causal_lm.h"
#include "ao/nn/attention.h"
#include "ao/nn/embedding.h"

namespace ao::models {

struct LoadOptions {
  // KV cache capacity; 0: min(max_position_embeddings, 4096). Larger than the model's
  // maximum is an error.
  int64_t context = 0;
  // Tokens per forward slice during prefill (bounds activation memory).
  int64_t max_batch_tokens = 512;
};

using LinearWeightMap = std::map<std::string, std::shared_ptr<const quant::LinearWeight>>;

struct LlamaDecoderLayer {
  nn::RMSNorm input_layernorm;
  nn::Attention self_attn;
  nn::RMSNorm post_attention_layernorm;
  nn::SwiGLUMLP mlp;
};

class LlamaModel final : public CausalLM {
 public:
  // `tensors` use HF names; every expected tensor must be present with the expected shape
  // (an ao::Error names the first one that is missing or wrong). `source` names the
  // checkpoint in messages.
  // `prebuilt` supplies Linear weights by module FQN (e.g. quantized ones from a TorchAO
  // checkpoint); those modules need no `.weight` tensor.
  LlamaModel(const io::ModelConfig& config, std::vector<io::NamedTensor> tensors,
             const LoadOptions& opts, const std::string& source,
             const LinearWeightMap& prebuilt = {});

  const io::ModelConfig& config() const override { return config_; }
  int64_t context_size() const override { return cache_.capacity(); }
  int64_t n_past() const override { return n_past_; }
  void reset() override { n_past_ = 0; }
  void truncate(int64_t n) override;
  void forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) override;
  std::vector<std::pair<std::string, nn::Linear*>> linears() override;
  const std::vector<io::NamedTensor>& source_tensors() const override { return source_; }
  int64_t parameter_count() const override;
  size_t weight_bytes() const override;

  const nn::Embedding& embed_tokens() const { return embed_; }
  std::vector<LlamaDecoderLayer>& layers() { return layers_; }

 private:
  void forward_slice(const int32_t* tokens, int64_t n, float* logits, bool all_logits);

  io::ModelConfig config_;
  LoadOptions opts_;
  std::vector<io::NamedTensor> source_;
  nn::RotaryEmbedding rope_;
  nn::Embedding embed_;
  std::vector<LlamaDecoderLayer> layers_;
  nn::RMSNorm norm_;
  nn::Linear lm_head_;
  nn::KVCache cache_;
  int64_t n_past_ = 0;
  std::vector<float> x_, h_, scratch_;  // activations, grown on demand
};

}  // namespace ao::models

// Model hyper-parameters of the Llama family, read from HF config.json or a llama2.c header.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ao::io {

struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "llama2.c"
  std::string model_type;    // "llama", "mistral", "qwen2", "llama2c"
  int dim = 0;               // hidden_size
  int hidden_dim = 0;        // intermediate_size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool rope_interleaved = false;  // llama2.c pairs (2i, 2i+1); HF rotates halves
  RopeScaling rope_scaling;
  bool tie_embeddings = false;
  bool attention_bias = false;    // Qwen2: q/k/v have bias
  std::string torch_dtype;        // as in config.json, e.g. "bfloat16"
  int bos_token_id = 1;
  int eos_token_id = 2;
  std::optional<int> sliding_window;
  nlohmann::json raw;             // the whole config.json (empty for llama2.c)

  int64_t parameter_count() const;  // the exact count the weights of this shape hold
};

// Reads and validates config.json; throws ao::Error naming the file and the missing or bad
// field, or the unknown architecture.
ModelConfig load_hf_config(const std::string& config_json_path);
ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& context);

}  // namespace ao::io

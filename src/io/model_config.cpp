#include "ao/io/model_config.h"

#include <filesystem>
#include <set>

#include "ao/core/error.h"
#include "ao/core/mmap.h"

namespace ao::io {
using nlohmann::json;

namespace {

int get_positive_int(const json& j, const char* key, const std::string& ctx) {
  AO_CHECK(j.contains(key), "{}: missing required field '{}'", ctx, key);
  AO_CHECK(j[key].is_number_integer() && j[key].get<int64_t>() > 0 && j[key].get<int64_t>() < (1 << 30),
           "{}: field '{}' must be a positive integer, got {}", ctx, key, j[key].dump());
  return j[key].get<int>();
}

template <typename T>
T get_or(const json& j, const char* key, T dflt, const std::string& ctx) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail("{}: field '{}' has the wrong type: {}", ctx, key, j[key].dump());
  }
}

}  // namespace

int64_t ModelConfig::parameter_count() const {
  const int64_t hd = head_dim, q = int64_t(n_heads) * hd, kv = int64_t(n_kv_heads) * hd;
  int64_t per_layer = dim * q + 2 * dim * kv + q * dim;  // q, k, v, o
  if (attention_bias) per_layer += q + 2 * kv;
  per_layer += 3 * int64_t(dim) * hidden_dim;             // gate, up, down
  per_layer += 2 * int64_t(dim);                           // two RMSNorm weights
  int64_t n = int64_t(vocab_size) * dim + n_layers * per_layer + dim;
  if (!tie_embeddings) n += int64_t(vocab_size) * dim;
  return n;
}

ModelConfig parse_hf_config(const json& j, const std::string& ctx) {
  AO_CHECK(j.is_object(), "{}: config must be a JSON object", ctx);
  static const std::map<std::string, std::string> kArch = {
      {"LlamaForCausalLM", "llama"},
      {"MistralForCausalLM", "mistral"},
      {"Qwen2ForCausalLM", "qwen2"},
  };
  ModelConfig c;
  c.raw = j;
  if (j.contains("architectures")) {
    AO_CHECK(j["architectures"].is_array() && !j["architectures"].empty() && j["architectures"][0].is_string(),
             "{}: 'architectures' must be a non-empty list of names", ctx);
    c.architecture = j["architectures"][0].get<std::string>();
  } else {
    AO_CHECK(j.contains("model_type") && j["model_type"].is_string(),
             "{}: needs 'architectures' or 'model_type'", ctx);
    const std::string mt = j["model_type"].get<std::string>();
    for (const auto& [a, m] : kArch)
      if (m == mt) c.architecture = a;
    AO_CHECK(!c.architecture.empty(), "{}: unsupported model_type '{}'", ctx, mt);
  }
  auto it = kArch.find(c.architecture);
  if (it == kArch.end()) {
    std::string known;
    for (const auto& [a, _] : kArch) known += (known.empty() ? "" : ", ") + a;
    fail("{}: unsupported architecture '{}' (supported: {})", ctx, c.architecture, known);
  }
  c.model_type = it->second;
  c.dim = get_positive_int(j, "hidden_size", ctx);
  c.hidden_dim = get_positive_int(j, "intermediate_size", ctx);
  c.n_layers = get_positive_int(j, "num_hidden_layers", ctx);
  c.n_heads = get_positive_int(j, "num_attention_heads", ctx);
  c.n_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                     ? get_positive_int(j, "num_key_value_heads", ctx)
                     : c.n_heads;
  c.vocab_size = get_positive_int(j, "vocab_size", ctx);
  c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? get_positive_int(j, "head_dim", ctx)
                                                                  : c.dim / c.n_heads;
  AO_CHECK(j.contains("head_dim") || c.dim % c.n_heads == 0,
           "{}: hidden_size {} is not divisible by num_attention_heads {}", ctx, c.dim, c.n_heads);
  AO_CHECK(c.n_heads % c.n_kv_heads == 0, "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
           ctx, c.n_heads, c.n_kv_heads);
  AO_CHECK(c.head_dim % 2 == 0, "{}: head_dim {} must be even for RoPE", ctx, c.head_dim);
  c.max_seq_len = get_or<int>(j, "max_position_embeddings", 2048, ctx);
  AO_CHECK(c.max_seq_len > 0, "{}: max_position_embeddings must be positive", ctx);
  c.norm_eps = get_or<float>(j, "rms_norm_eps", 1e-6f, ctx);
  c.rope_theta = get_or<float>(j, "rope_theta", 10000.0f, ctx);
  // transformers 5 may nest rope parameters under "rope_parameters".
  json rope = j.contains("rope_scaling") && !j["rope_scaling"].is_null() ? j["rope_scaling"] : json();
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    rope = j["rope_parameters"];
    c.rope_theta = get_or<float>(rope, "rope_theta", c.rope_theta, ctx);
  }
  if (rope.is_object()) {
    std::string type = get_or<std::string>(rope, "rope_type", get_or<std::string>(rope, "type", "default", ctx), ctx);
    if (type == "llama3" || type == "linear") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = get_or<float>(rope, "factor", 1.0f, ctx);
      c.rope_scaling.low_freq_factor = get_or<float>(rope, "low_freq_factor", 1.0f, ctx);
      c.rope_scaling.high_freq_factor = get_or<float>(rope, "high_freq_factor", 4.0f, ctx);
      c.rope_scaling.original_max_position_embeddings =
          get_or<int>(rope, "original_max_position_embeddings", 8192, ctx);
    } else if (type != "default") {
      throw NotSupported(ctx + ": rope scaling type '" + type + "'");
    }
  }
  c.tie_embeddings = get_or<bool>(j, "tie_word_embeddings", false, ctx);
  c.attention_bias = c.model_type == "qwen2" ? true : get_or<bool>(j, "attention_bias", false, ctx);
  AO_CHECK(!get_or<bool>(j, "mlp_bias", false, ctx), "{}: mlp_bias=true is not supported", ctx);
  c.torch_dtype = get_or<std::string>(j, "torch_dtype", get_or<std::string>(j, "dtype", "float32", ctx), ctx);
  c.bos_token_id = get_or<int>(j, "bos_token_id", 1, ctx);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array() && !j["eos_token_id"].empty())
    c.eos_token_id = j["eos_token_id"][0].get<int>();
  else
    c.eos_token_id = get_or<int>(j, "eos_token_id", 2, ctx);
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
      get_or<bool>(j, "use_sliding_window", c.model_type == "mistral", ctx))
    c.sliding_window = j["sliding_window"].get<int>();
  return c;
}

ModelConfig load_hf_config(const std::string& path) {
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  return parse_hf_config(j, path);
}

}  // namespace ao::io

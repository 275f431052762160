#include "ao/models/llama.h"

#include <algorithm>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/quant/dense_weight.h"

namespace ao::models {

void CausalLM::set_weight(const std::string& fqn, std::shared_ptr<const quant::LinearWeight> w) {
  for (auto& [name, lin] : linears())
    if (name == fqn) return lin->set_weight(std::move(w));
  fail("set_weight: the model has no Linear layer named '{}'", fqn);
}

namespace {

// Checked access to the checkpoint's tensors by HF name.
class TensorTable {
 public:
  TensorTable(const std::vector<io::NamedTensor>& tensors, const io::ModelConfig& c,
              std::string source, const LinearWeightMap& prebuilt)
      : prebuilt(prebuilt), source_(std::move(source)), arch_(c.architecture) {
    for (const auto& t : tensors) map_.emplace(t.name, t.tensor);
  }
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  const std::string& source() const { return source_; }
  const LinearWeightMap& prebuilt;
  Tensor get(const std::string& name, const Shape& shape) const {
    auto it = map_.find(name);
    AO_CHECK(it != map_.end(), "{}: tensor '{}' (shape {}) is missing; {} needs it", source_, name,
             shape_str(shape), arch_);
    AO_CHECK(it->second.shape() == shape,
             "{}: tensor '{}' has shape {}, expected {} from the config", source_, name,
             shape_str(it->second.shape()), shape_str(shape));
    AO_CHECK(dtype_info(it->second.dtype()).is_float && !dtype_info(it->second.dtype()).is_packed,
             "{}: tensor '{}' has dtype {}, expected f32, f16 or bf16", source_, name,
             dtype_name(it->second.dtype()));
    return it->second;
  }

 private:
  std::string source_, arch_;
  std::map<std::string, Tensor> map_;
};

nn::Linear make_linear(const TensorTable& tt, const std::string& name, int64_t out, int64_t in,
                       bool bias) {
  Tensor b = bias ? tt.get(name + ".bias", {out}) : Tensor();
  if (auto it = tt.prebuilt.find(name); it != tt.prebuilt.end()) {
    const auto& w = it->second;
    AO_CHECK(w->out_features() == out && w->in_features() == in,
             "{}: weight of '{}' ({}) is [{}, {}], expected [{}, {}] from the config", tt.source(),
             name, w->type_name(), w->out_features(), w->in_features(), out, in);
    return nn::Linear(name, w, b);
  }
  auto w =
      std::make_shared<quant::DenseWeight>(tt.get(name + ".weight", {out, in}), name + ".weight");
  return nn::Linear(name, std::move(w), b);
}

}  // namespace

LlamaModel::LlamaModel(const io::ModelConfig& c, std::vector<io::NamedTensor> tensors,
                       const LoadOptions& opts, const std::string& source,
                       const LinearWeightMap& prebuilt)
    : config_(c), opts_(opts), source_(std::move(tensors)) {
  AO_CHECK(c.dim > 0 && c.hidden_dim > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
               c.head_dim > 0 && c.vocab_size > 0 && c.max_seq_len > 0,
           "{}: incomplete model config", source);
  int64_t ctx = opts.context > 0 ? opts.context : std::min<int64_t>(c.max_seq_len, 4096);
  AO_CHECK(ctx <= c.max_seq_len,
           "{}: context {} is larger than the model's maximum of {} positions", source, ctx,
           c.max_seq_len);
  AO_CHECK(opts_.max_batch_tokens > 0, "max_batch_tokens must be positive");
  for (const auto& [name, w] : prebuilt) {
    AO_CHECK(w != nullptr, "{}: no weight given for '{}'", source, name);
    (void)w;
  }
  TensorTable tt(source_, c, source, prebuilt);
  const int64_t D = c.dim, F = c.hidden_dim, V = c.vocab_size, hd = c.head_dim;
  const int64_t qd = int64_t(c.n_heads) * hd, kvd = int64_t(c.n_kv_heads) * hd;
  rope_ = nn::RotaryEmbedding(c.head_dim, c.rope_theta, c.rope_interleaved, c.rope_scaling);
  // A quantized embedding table (rare) is looked up from its dequantized values.
  if (auto it = prebuilt.find("model.embed_tokens");
      it != prebuilt.end() && !tt.has("model.embed_tokens.weight"))
    embed_ = nn::Embedding("model.embed_tokens", it->second->dequantize());
  else
    embed_ = nn::Embedding("model.embed_tokens", tt.get("model.embed_tokens.weight", {V, D}));
  nn::AttentionConfig ac{c.n_heads, c.n_kv_heads, c.head_dim, c.sliding_window.value_or(0)};
  layers_.reserve(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    const std::string a = p + ".self_attn", m = p + ".mlp";
    LlamaDecoderLayer layer;
    layer.input_layernorm =
        nn::RMSNorm(p + ".input_layernorm", tt.get(p + ".input_layernorm.weight", {D}), c.norm_eps);
    layer.self_attn = nn::Attention(a, ac, make_linear(tt, a + ".q_proj", qd, D, c.attention_bias),
                                    make_linear(tt, a + ".k_proj", kvd, D, c.attention_bias),
                                    make_linear(tt, a + ".v_proj", kvd, D, c.attention_bias),
                                    make_linear(tt, a + ".o_proj", D, qd, false), &rope_);
    layer.post_attention_layernorm =
        nn::RMSNorm(p + ".post_attention_layernorm",
                    tt.get(p + ".post_attention_layernorm.weight", {D}), c.norm_eps);
    layer.mlp = nn::SwiGLUMLP(m, make_linear(tt, m + ".gate_proj", F, D, false),
                              make_linear(tt, m + ".up_proj", F, D, false),
                              make_linear(tt, m + ".down_proj", D, F, false));
    layers_.push_back(std::move(layer));
  }
  norm_ = nn::RMSNorm("model.norm", tt.get("model.norm.weight", {D}), c.norm_eps);
  if (c.tie_embeddings && !prebuilt.count("lm_head"))
    lm_head_ = nn::Linear("lm_head",
                          std::make_shared<quant::DenseWeight>(embed_.weight(), "lm_head.weight"));
  else
    lm_head_ = make_linear(tt, "lm_head", V, D, false);
  cache_ = nn::KVCache(c.n_layers, c.n_kv_heads, c.head_dim, ctx);
  log(LogLevel::debug,
      "{}: {} ({} layers, dim {}, {} heads / {} kv heads, vocab {}), context {}, KV cache {:.1f} "
      "MiB",
      source, c.architecture, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.vocab_size, ctx,
      cache_.nbytes() / 1048576.0);
}

void LlamaModel::truncate(int64_t n) {
  AO_CHECK(n >= 0 && n <= n_past_, "truncate({}): the cache holds {} tokens", n, n_past_);
  n_past_ = n;
}

std::vector<std::pair<std::string, nn::Linear*>> LlamaModel::linears() {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (auto& l : layers_) {
    for (nn::Linear* lin :
         {&l.self_attn.q_proj(), &l.self_attn.k_proj(), &l.self_attn.v_proj(),
          &l.self_attn.o_proj(), &l.mlp.gate_proj(), &l.mlp.up_proj(), &l.mlp.down_proj()})
      out.emplace_back(lin->name(), lin);
  }
  out.emplace_back(lm_head_.name(), &lm_head_);
  return out;
}

int64_t LlamaModel::parameter_count() const { return config_.parameter_count(); }

size_t LlamaModel::weight_bytes() const {
  size_t b = embed_.weight().nbytes() + norm_.weight().nbytes();
  for (const auto& l : const_cast<LlamaModel*>(this)->linears()) {
    const auto* dense = dynamic_cast<const quant::DenseWeight*>(l.second->weight().get());
    const bool shares_embedding = dense && dense->weight().data_ptr() == embed_.weight().data_ptr();
    if (!shares_embedding) b += l.second->weight()->nbytes();
    if (l.second->bias().defined()) b += l.second->bias().nbytes();
  }
  for (const auto& l : layers_)
    b += l.input_layernorm.weight().nbytes() + l.post_attention_layernorm.weight().nbytes();
  return b;
}

void LlamaModel::forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
  AO_CHECK(n > 0, "forward: no tokens");
  AO_CHECK(n_past_ + n <= context_size(),
           "{} tokens after {} cached ones exceed the context size {}", n, n_past_, context_size());
  const int64_t step = opts_.max_batch_tokens;
  for (int64_t i = 0; i < n; i += step) {
    const int64_t len = std::min(step, n - i);
    const bool last = i + len == n;
    if (all_logits)
      forward_slice(tokens + i, len, logits + i * vocab_size(), true);
    else
      forward_slice(tokens + i, len, last ? logits : nullptr, false);
  }
}

void LlamaModel::forward_slice(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
  const int64_t D = config_.dim;
  if (x_.size() < size_t(n * D)) x_.resize(n * D), h_.resize(n * D);
  if (!layers_.empty()) {
    const int64_t need =
        std::max(layers_[0].self_attn.scratch_floats(n), layers_[0].mlp.scratch_floats(n));
    if (scratch_.size() < size_t(need)) scratch_.resize(need);
  }
  float* x = x_.data();
  float* h = h_.data();
  embed_.forward(tokens, n, x);
  for (int l = 0; l < config_.n_layers; ++l) {
    auto& L = layers_[l];
    L.input_layernorm.forward(x, h, n);
    L.self_attn.forward(h, n, n_past_, cache_, l, h, scratch_.data());
    for (int64_t i = 0; i < n * D; ++i) x[i] += h[i];
    L.post_attention_layernorm.forward(x, h, n);
    L.mlp.forward(h, n, h, scratch_.data());
    for (int64_t i = 0; i < n * D; ++i) x[i] += h[i];
  }
  n_past_ += n;
  if (!logits) return;
  if (all_logits) {
    norm_.forward(x, x, n);
    lm_head_.forward(x, n, logits);
  } else {
    float* last = x + (n - 1) * D;
    norm_.forward(last, last, 1);
    lm_head_.forward(last, 1, logits);
  }
}

}  // namespace ao::models

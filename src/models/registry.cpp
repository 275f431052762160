#include "ao/models/registry.h"

#include <cmath>
#include <map>
#include <mutex>
#include <random>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/quant/checkpoint.h"

namespace ao::models {
namespace {

std::map<std::string, ModelBuilder>& builders() {
  static std::map<std::string, ModelBuilder> b = [] {
    std::map<std::string, ModelBuilder> m;
    auto llama = [](const io::ModelConfig& c, std::vector<io::NamedTensor> t, const LoadOptions& o,
                    const std::string& src,
                    const LinearWeightMap& pre) -> std::unique_ptr<CausalLM> {
      return std::make_unique<LlamaModel>(c, std::move(t), o, src, pre);
    };
    for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "llama2.c"})
      m[a] = llama;
    return m;
  }();
  return b;
}

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

void register_architecture(const std::string& architecture, ModelBuilder builder) {
  std::lock_guard lock(registry_mutex());
  builders()[architecture] = std::move(builder);
}

std::vector<std::string> registered_architectures() {
  std::lock_guard lock(registry_mutex());
  std::vector<std::string> names;
  for (const auto& [n, _] : builders()) names.push_back(n);
  return names;
}

std::unique_ptr<CausalLM> build_model(const io::ModelConfig& config,
                                      std::vector<io::NamedTensor> tensors, const LoadOptions& opts,
                                      const std::string& source, const LinearWeightMap& prebuilt) {
  ModelBuilder b;
  {
    std::lock_guard lock(registry_mutex());
    auto it = builders().find(config.architecture);
    if (it != builders().end()) b = it->second;
  }
  if (!b) {
    std::string known;
    for (const auto& n : registered_architectures()) known += (known.empty() ? "" : ", ") + n;
    fail("{}: no model builder for architecture '{}' (known: {})", source, config.architecture,
         known);
  }
  return b(config, std::move(tensors), opts, source, prebuilt);
}

LoadedModel load_model(const std::string& path, const LoadOptions& opts) {
  LoadedModel m;
  m.files = io::open_model_files(path);
  AO_CHECK(m.files.config.has_value(),
           "{}: no config.json next to the weights; cannot tell the architecture", path);
  if (quant::is_torchao_checkpoint(m.files)) {
    quant::QuantizedWeights q = quant::load_quantized_weights(m.files);
    LinearWeightMap prebuilt(q.linears.begin(), q.linears.end());
    m.model = build_model(*m.files.config, std::move(q.dense), opts, path, prebuilt);
  } else {
    m.model = build_model(*m.files.config, std::move(m.files.tensors), opts, path);
  }
  m.files.tensors.clear();
  return m;
}

void check_tokenizer_fits(const text::Tokenizer& tok, const CausalLM& model,
                          const std::string& path) {
  const int64_t V = model.vocab_size();
  AO_CHECK(tok.vocab_size() <= V,
           "tokenizer {} ({}) has {} tokens but the model's vocabulary has {}: they do not belong "
           "together",
           path, tok.description(), tok.vocab_size(), V);
  AO_CHECK(tok.bos_id() < V && tok.eos_id() < V,
           "tokenizer {}: BOS {} / EOS {} outside the model's vocabulary of {}", path, tok.bos_id(),
           tok.eos_id(), V);
}

std::unique_ptr<text::Tokenizer> load_model_tokenizer(const LoadedModel& m,
                                                      const std::string& path) {
  const std::string p = path.empty() ? m.files.tokenizer_path : path;
  AO_CHECK(!p.empty(),
           "{}: no tokenizer found next to the model (tokenizer.json, tokenizer.model, tok*.bin); "
           "pass one with --tokenizer",
           m.files.path);
  auto tok = text::load_tokenizer(p);
  check_tokenizer_fits(*tok, *m.model, p);
  return tok;
}

std::vector<std::string> synthetic_model_names() {
  return {"stories15M", "stories110M", "tinyllama-1.1b", "qwen2-0.5b", "llama3-1b",
          "llama2-7b",  "mistral-7b",  "llama3-8b",      "qwen2.5-7b", "llama3-70b"};
}

io::ModelConfig synthetic_config(const std::string& name) {
  io::ModelConfig c;
  c.torch_dtype = "float32";
  auto set = [&](const char* arch, int dim, int hidden, int layers, int heads, int kv, int vocab,
                 int ctx, float theta) {
    c.architecture = arch;
    c.dim = dim, c.hidden_dim = hidden, c.n_layers = layers, c.n_heads = heads, c.n_kv_heads = kv;
    c.head_dim = dim / heads, c.vocab_size = vocab, c.max_seq_len = ctx, c.rope_theta = theta;
  };
  if (name == "stories15M") {
    set("llama2.c", 288, 768, 6, 6, 6, 32000, 256, 10000.0f);
    c.rope_interleaved = true, c.tie_embeddings = true;
  } else if (name == "stories110M") {
    set("llama2.c", 768, 2048, 12, 12, 12, 32000, 1024, 10000.0f);
    c.rope_interleaved = true, c.tie_embeddings = true;
  } else if (name == "tinyllama-1.1b") {
    set("LlamaForCausalLM", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f);
  } else if (name == "qwen2-0.5b") {
    set("Qwen2ForCausalLM", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0f);
    c.attention_bias = true, c.tie_embeddings = true, c.norm_eps = 1e-6f;
  } else if (name == "llama3-1b") {
    set("LlamaForCausalLM", 2048, 8192, 16, 32, 8, 128256, 131072, 500000.0f);
    c.tie_embeddings = true;
    c.rope_scaling = {"llama3", 32.0f, 1.0f, 4.0f, 8192};
  } else if (name == "llama2-7b") {
    set("LlamaForCausalLM", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f);
  } else if (name == "mistral-7b") {
    set("MistralForCausalLM", 4096, 14336, 32, 32, 8, 32000, 32768, 1000000.0f);
  } else if (name == "llama3-8b") {
    set("LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f);
  } else if (name == "llama3-70b") {
    set("LlamaForCausalLM", 8192, 28672, 80, 64, 8, 128256, 8192, 500000.0f);
  } else if (name == "qwen2.5-7b") {
    set("Qwen2ForCausalLM", 3584, 18944, 28, 28, 4, 152064, 32768, 1000000.0f);
    c.attention_bias = true, c.norm_eps = 1e-6f;
  } else {
    std::string known;
    for (const auto& n : synthetic_model_names()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown synthetic model '{}' (known: {})", name, known);
  }
  c.model_type = c.architecture == "llama2.c" ? "llama2c" : "llama";
  return c;
}

std::unique_ptr<CausalLM> synthetic_model(const io::ModelConfig& c, uint64_t seed,
                                          const LoadOptions& opts, DType weight_dtype) {
  AO_CHECK(weight_dtype == DType::f32 || weight_dtype == DType::bf16 || weight_dtype == DType::f16,
           "synthetic model: weight dtype must be f32, bf16 or f16, got {}",
           dtype_name(weight_dtype));
  const int64_t D = c.dim, F = c.hidden_dim, V = c.vocab_size, hd = c.head_dim;
  const int64_t qd = int64_t(c.n_heads) * hd, kvd = int64_t(c.n_kv_heads) * hd;
  std::vector<io::NamedTensor> t;
  // Uniform(-a, a) with a = 1/sqrt(fan_in) keeps activations bounded through the layers.
  auto rnd = [&](const std::string& name, const Shape& shape, float a) {
    Tensor x = Tensor::empty(shape, DType::f32);
    float* p = x.data<float>();
    const int64_t n = x.numel();
    const uint64_t base = seed * 0x9E3779B97F4A7C15ull + std::hash<std::string>{}(name);
    parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
      std::mt19937_64 g(base + static_cast<uint64_t>(b));
      std::uniform_real_distribution<float> u(-a, a);
      for (int64_t i = b; i < e; ++i) p[i] = u(g);
    });
    t.push_back({name, shape.size() == 2 ? x.to(weight_dtype) : x});
  };
  auto ones = [&](const std::string& name, int64_t n) {
    t.push_back({name, Tensor::full({n}, 1.0f)});
  };
  rnd("model.embed_tokens.weight", {V, D}, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const float ad = 1.0f / std::sqrt(float(D)), aq = 1.0f / std::sqrt(float(qd)),
                af = 1.0f / std::sqrt(float(F));
    ones(p + "input_layernorm.weight", D);
    rnd(p + "self_attn.q_proj.weight", {qd, D}, ad);
    rnd(p + "self_attn.k_proj.weight", {kvd, D}, ad);
    rnd(p + "self_attn.v_proj.weight", {kvd, D}, ad);
    rnd(p + "self_attn.o_proj.weight", {D, qd}, aq);
    if (c.attention_bias) {
      rnd(p + "self_attn.q_proj.bias", {qd}, ad);
      rnd(p + "self_attn.k_proj.bias", {kvd}, ad);
      rnd(p + "self_attn.v_proj.bias", {kvd}, ad);
    }
    ones(p + "post_attention_layernorm.weight", D);
    rnd(p + "mlp.gate_proj.weight", {F, D}, ad);
    rnd(p + "mlp.up_proj.weight", {F, D}, ad);
    rnd(p + "mlp.down_proj.weight", {D, F}, af);
  }
  ones("model.norm.weight", D);
  if (!c.tie_embeddings) rnd("lm_head.weight", {V, D}, 1.0f / std::sqrt(float(D)));
  return build_model(c, std::move(t), opts, "synthetic " + c.architecture);
}

}  // namespace ao::models

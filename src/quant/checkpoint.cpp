#include "ao/quant/checkpoint.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ao/core/error.h"
#include "ao/core/log.h"

namespace ao::quant {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int u = 0;
  while (b >= 1024 && u < 3) b /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

// "model.layers.0.mlp.down_proj.weight" -> "model.layers.0.mlp.down_proj"
std::string module_of(const std::string& tensor_name) {
  return tensor_name.substr(0, tensor_name.rfind('.'));
}

bool is_linear_weight(const std::string& name, const Tensor& t) {
  if (t.dim() != 2 || !name.ends_with(".weight")) return false;
  return !(name.find("embed_tokens") != std::string::npos ||
           name.find("norm") != std::string::npos);
}

// llama.c / Meta pairs RoPE dimensions (2i, 2i+1); HF rotates halves. HF's conversion script
// permutes q/k rows: view(heads, hd/2, 2, dim).transpose(1, 2).
Tensor permute_for_hf_rope(const Tensor& w, int64_t heads) {
  const Tensor src = w.contiguous().to(DType::f32);
  const int64_t rows = src.size(0), cols = src.size(1), hd = rows / heads;
  Tensor out = Tensor::empty({rows, cols}, DType::f32);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* s = src.data<float>() + (h * hd + 2 * i + j) * cols;
        std::copy(s, s + cols, out.data<float>() + (h * hd + j * (hd / 2) + i) * cols);
      }
  return out;
}

json hf_config_for(const io::ModelFiles& in) {
  const io::ModelConfig& c = *in.config;
  if (in.format != "llama2c" && !c.raw.is_null() && !c.raw.empty()) {
    json j = json::parse(c.raw.dump());
    j.erase("quantization_config");
    return j;
  }
  return json{{"architectures", json::array({"LlamaForCausalLM"})},
              {"model_type", "llama"},
              {"hidden_size", c.dim},
              {"intermediate_size", c.hidden_dim},
              {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads},
              {"num_key_value_heads", c.n_kv_heads},
              {"head_dim", c.head_dim},
              {"vocab_size", c.vocab_size},
              {"max_position_embeddings", c.max_seq_len},
              {"rms_norm_eps", c.norm_eps},
              {"rope_theta", c.rope_theta},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", c.tie_embeddings},
              {"torch_dtype", "float32"},
              {"bos_token_id", c.bos_token_id},
              {"eos_token_id", c.eos_token_id}};
}

}  // namespace

std::string QuantizeSummary::markdown() const {
  std::string s =
      "| tensor | format | config | shape | bytes before | bytes after | bits/weight | time (ms) "
      "|\n"
      "|---|---|---|---|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    if (r.format == "dense") continue;
    const double n = static_cast<double>(shape_numel(r.shape));
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {:.2f} | {:.1f} |\n", r.name, r.format,
                     r.config, shape_str(r.shape), r.bytes_before, r.bytes_after,
                     8.0 * r.bytes_after / n, r.seconds * 1e3);
  }
  const int dense = static_cast<int>(rows.size()) - quantized;
  s += fmt::format(
      "\n| tensors | quantized | kept | bits/weight (quantized) | bytes before | bytes after | "
      "ratio | file | time |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
      "| {} | {} | {} | {:.2f} | {} | {} | {:.2f}x | {} | {:.2f} s |\n",
      rows.size(), quantized, dense, quantized_bits_per_weight(),
      human_bytes(static_cast<double>(bytes_before)), human_bytes(static_cast<double>(bytes_after)),
      bytes_after ? static_cast<double>(bytes_before) / static_cast<double>(bytes_after) : 0.0,
      human_bytes(static_cast<double>(file_bytes)), seconds);
  return s;
}

double QuantizeSummary::quantized_bits_per_weight() const {
  double bits = 0, n = 0;
  for (const auto& r : rows)
    if (r.format != "dense")
      bits += 8.0 * static_cast<double>(r.bytes_after),
          n += static_cast<double>(shape_numel(r.shape));
  return n > 0 ? bits / n : 0.0;
}

json QuantizeSummary::json() const {
  return {{"tensors", rows.size()},
          {"quantized", quantized},
          {"bytes_before", bytes_before},
          {"bytes_after", bytes_after},
          {"file_bytes", file_bytes},
          {"bits_per_quantized_weight", quantized_bits_per_weight()},
          {"seconds", seconds}};
}

bool is_torchao_checkpoint(const io::ModelFiles& m) {
  if (m.metadata.count("tensor_names")) return true;
  if (m.config && m.config->raw.is_object() && m.config->raw.contains("quantization_config")) {
    const auto& q = m.config->raw["quantization_config"];
    return q.is_object() && q.value("quant_method", "") == "torchao";
  }
  return false;
}

void append_quantized_weight(const std::string& weight_name, const QTensor& q,
                             std::vector<io::NamedTensor>& tensors,
                             std::map<std::string, std::string>& metadata) {
  // "<module>.weight" -> "<module>._weight_<name>", the names load_quantized_weights looks up.
  const std::string prefix =
      module_of(weight_name) + "._" + weight_name.substr(weight_name.rfind('.') + 1) + "_";
  for (const auto& d : q.data()) tensors.push_back({prefix + d.name, d.tensor});
  metadata[weight_name] = q.metadata().dump();
}

QuantizeSummary quantize_model(const io::ModelFiles& in, const QuantPlan& plan,
                               const std::string& out_dir, bool overwrite,
                               const QuantizeProgress& progress) {
  Timer timer;
  AO_CHECK(!is_torchao_checkpoint(in),
           "{}: already a TorchAO-quantized checkpoint; quantize the original high-precision model "
           "instead",
           in.path);
  AO_CHECK(in.config.has_value(),
           "{}: no config.json next to the weights; cannot write a model folder", in.path);
  AO_CHECK(!in.tensors.empty(), "{}: no tensors", in.path);
  const fs::path out(out_dir);
  AO_CHECK(overwrite || !fs::exists(out), "{}: already exists (pass --force to replace it)",
           out_dir);
  const bool from_llama2c = in.format == "llama2c";

  QuantizeSummary sum;
  std::vector<io::NamedTensor> tensors;
  std::map<std::string, std::string> meta;
  json names = json::array();
  size_t done = 0;
  for (const auto& nt : in.tensors) {
    if (progress) progress(done, in.tensors.size(), nt.name);
    Timer t;
    QuantizedTensorRow row{
        nt.name, "dense", "", nt.tensor.shape(), static_cast<int64_t>(nt.tensor.nbytes()), 0, 0};
    Tensor w = nt.tensor;
    if (from_llama2c && in.config->rope_interleaved) {
      if (nt.name.ends_with("self_attn.q_proj.weight"))
        w = permute_for_hf_rope(w, in.config->n_heads);
      if (nt.name.ends_with("self_attn.k_proj.weight"))
        w = permute_for_hf_rope(w, in.config->n_kv_heads);
    }
    QTensorPtr q;
    if (is_linear_weight(nt.name, w)) {
      const auto cfg = plan.config_for(module_of(nt.name));
      if (cfg) {
        q = quantize_weight(w, *cfg, module_of(nt.name));
        row.config = cfg->short_name();
      }
    }
    names.push_back(nt.name);
    if (q) {
      append_quantized_weight(nt.name, *q, tensors, meta);
      row.format = q->type_name();
      row.bytes_after = static_cast<int64_t>(q->nbytes());
      ++sum.quantized;
    } else {
      tensors.push_back({nt.name, w});
      meta[nt.name] =
          json{{"_type", "Tensor"}}.dump();  // torch.Tensor.__name__, as TorchAO writes it
      row.bytes_after = row.bytes_before;
    }
    row.seconds = t.seconds();
    sum.bytes_before += row.bytes_before;
    sum.bytes_after += row.bytes_after;
    sum.rows.push_back(std::move(row));
    ++done;
  }
  if (progress) progress(done, in.tensors.size(), "");
  meta["tensor_names"] = names.dump();
  meta["format"] = "pt";

  json cfg = hf_config_for(in);
  json qc;
  qc["include_input_output_embeddings"] = false;
  qc["modules_to_not_convert"] = nullptr;
  qc["quant_method"] = "torchao";
  qc["quant_type"] = json{{"default", plan.to_torchao_json()}};
  qc["untie_embedding_weights"] = false;
  cfg["quantization_config"] = qc;

  // Write everything into a temporary sibling and rename at the end.
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  fs::create_directories(parent);
  const fs::path tmp =
      parent / fmt::format(".{}.tmp-{}", out.filename().string(), std::random_device{}());
  fs::create_directories(tmp);
  try {
    io::save_safetensors((tmp / "model.safetensors").string(), tensors, meta);
    std::ofstream(tmp / "config.json") << cfg.dump(2) << "\n";
    if (!in.tokenizer_path.empty()) {
      const fs::path tok(in.tokenizer_path);
      fs::copy_file(tok, tmp / tok.filename());
      // HF folders keep the SentencePiece model and friends next to tokenizer.json.
      for (const char* extra : {"tokenizer.model", "tokenizer_config.json",
                                "special_tokens_map.json", "generation_config.json"})
        if (fs::exists(tok.parent_path() / extra) && !fs::exists(tmp / extra))
          fs::copy_file(tok.parent_path() / extra, tmp / extra);
    }
    sum.file_bytes = static_cast<int64_t>(fs::file_size(tmp / "model.safetensors"));
    if (fs::exists(out)) fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  sum.seconds = timer.seconds();
  return sum;
}

std::vector<io::NamedTensor> QuantizedWeights::builder_tensors() const {
  std::vector<io::NamedTensor> t = dense;
  for (const auto& [fqn, q] : linears) t.push_back({fqn + ".weight", q->dequantize()});
  return t;
}

QuantizedWeights load_quantized_weights(const io::ModelFiles& m) {
  QuantizedWeights out;
  if (m.config && m.config->raw.is_object() && m.config->raw.contains("quantization_config"))
    out.quantization_config = m.config->raw["quantization_config"];
  auto it = m.metadata.find("tensor_names");
  if (it == m.metadata.end()) {
    AO_CHECK(!is_torchao_checkpoint(m),
             "{}: config.json says quant_method torchao but the safetensors metadata has no "
             "'tensor_names' (not "
             "TorchAO's flattened format)",
             m.path);
    out.dense = m.tensors;
    return out;
  }
  nlohmann::json names;
  try {
    names = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    fail("{}: metadata 'tensor_names' is not JSON: {}", m.path, e.what());
  }
  AO_CHECK(names.is_array(), "{}: metadata 'tensor_names' must be a JSON list", m.path);
  std::map<std::string, Tensor> by_name;
  for (const auto& nt : m.tensors) by_name[nt.name] = nt.tensor;
  std::set<std::string> used;
  for (const auto& n : names) {
    AO_CHECK(n.is_string(), "{}: metadata 'tensor_names' holds a non-string {}", m.path, n.dump());
    const std::string name = n.get<std::string>();
    auto mit = m.metadata.find(name);
    AO_CHECK(mit != m.metadata.end(),
             "{}: tensor '{}' is listed in tensor_names but has no metadata entry", m.path, name);
    json meta;
    try {
      meta = json::parse(mit->second);
    } catch (const std::exception& e) {
      fail("{}: metadata of '{}' is not JSON: {}", m.path, name, e.what());
    }
    const std::string type = meta.value("_type", "");
    const std::string where = fmt::format("{}: {} ({})", m.path, name, type);
    if (type == "Tensor" || type == "torch.Tensor") {
      auto t = by_name.find(name);
      // transformers lists a tied lm_head.weight in tensor_names but does not store it.
      if (t == by_name.end() && name == "lm_head.weight" && m.config && m.config->tie_embeddings)
        continue;
      AO_CHECK(t != by_name.end(), "{}: tensor is declared in metadata but missing from the file",
               where);
      out.dense.push_back({name, t->second});
      used.insert(name);
      continue;
    }
    const QTensorTypeInfo* info = find_qtensor_type(type);
    if (!info) {
      std::string known;
      for (const auto& t : qtensor_types())
        known += (known.empty() ? "" : ", ") + std::string(t.name);
      throw NotSupported(fmt::format("{}: tensor type '{}' (supported: {}, Tensor)",
                                     m.path + ": " + name, type, known));
    }
    AO_CHECK(meta.contains("_tensor_data_names") && meta["_tensor_data_names"].is_array(),
             "{}: metadata has no '_tensor_data_names' list", where);
    const std::string prefix = module_of(name) + "._" + name.substr(name.rfind('.') + 1) + "_";
    std::vector<io::NamedTensor> data;
    std::set<std::string> declared;
    for (const auto& dn : meta["_tensor_data_names"]) {
      const std::string d = dn.get<std::string>();
      declared.insert(d);
      auto t = by_name.find(prefix + d);
      AO_CHECK(t != by_name.end(),
               "{}: data tensor '{}' is declared in metadata but missing from the file", where,
               prefix + d);
      data.push_back({d, t->second});
      used.insert(prefix + d);
    }
    for (const auto& req : info->required_data)
      AO_CHECK(declared.count(req),
               "{}: required data tensor '{}' is not declared in _tensor_data_names", where, req);
    for (const auto& d : declared) {
      bool known = false;
      for (const auto& r : info->required_data) known |= r == d;
      for (const auto& r : info->optional_data) known |= r == d;
      AO_CHECK(known, "{}: unknown data tensor '{}' for {}", where, d, type);
    }
    for (const auto& [tn, t] : by_name)
      AO_CHECK(!tn.starts_with(prefix) || declared.count(tn.substr(prefix.size())),
               "{}: file tensor '{}' is not declared in _tensor_data_names", where, tn);
    out.linears[module_of(name)] =
        info->load(where, std::move(data), meta.value("_data", json::object()));
  }
  for (const auto& [tn, t] : by_name)
    AO_CHECK(used.count(tn),
             "{}: tensor '{}' is in the file but not described by the TorchAO metadata", m.path,
             tn);
  return out;
}

}  // namespace ao::quant

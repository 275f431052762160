// ao info PATH — what a checkpoint holds: config, tensors (dtype, shape, bytes), parameters.
// For a TorchAO-quantized checkpoint also its quantization_config and, per quantized Linear,
// the type, bits per weight and bytes — each weight rebuilt through ao::quant, so the
// metadata is validated against the tensors. --dump-dequantized writes what interop scripts
// compare with TorchAO's own dequantize() and F.linear.
#include <fmt/format.h>

#include <cmath>
#include <optional>
#include <nlohmann/json.hpp>

#include "ao/io/model_files.h"
#include "ao/io/safetensors.h"
#include "ao/quant/checkpoint.h"
#include "command.h"

namespace ao::cli {
namespace {

struct InfoArgs {
  std::string path, dump_dequantized;
  bool json = false;
  bool tensors = true;
};

// Per quantized Linear: <fqn>.weight (dequantized f32), <fqn>.x_m{1,16} with
// x[i] = sin(0.37 i + 0.1), and <fqn>.linear_m{1,16} = our linear() of that x (kernels and
// dynamic activation quantization included). Written atomically.
void dump_dequantized(const quant::QuantizedWeights& w, const std::string& path) {
  std::vector<io::NamedTensor> out;
  for (const auto& [fqn, q] : w.linears) {
    out.push_back({fqn + ".weight", q->dequantize()});
    const int64_t K = q->in_features(), N = q->out_features();
    for (int64_t M : {int64_t(1), int64_t(16)}) {
      Tensor x = Tensor::empty({M, K}, DType::f32);
      for (int64_t i = 0; i < M * K; ++i)
        x.data<float>()[i] = std::sin(0.37f * static_cast<float>(i) + 0.1f);
      Tensor y = Tensor::empty({M, N}, DType::f32);
      q->linear(x.data<float>(), M, y.data<float>());
      out.push_back({fmt::format("{}.linear_m{}", fqn, M), y});
      out.push_back({fmt::format("{}.x_m{}", fqn, M), x});
    }
  }
  io::save_safetensors(path, out);
}

nlohmann::ordered_json quantization_json(const quant::QuantizedWeights& w) {
  nlohmann::ordered_json j;
  j["quantization_config"] = w.quantization_config;
  j["linears"] = nlohmann::ordered_json::array();
  for (const auto& [fqn, q] : w.linears)
    j["linears"].push_back({{"module", fqn},
                            {"type", q->type_name()},
                            {"shape", q->shape()},
                            {"bits_per_weight", q->bits_per_weight()},
                            {"bytes", q->nbytes()},
                            {"attributes", q->attributes()}});
  return j;
}

void print_quantization(const quant::QuantizedWeights& w) {
  fmt::print("\n## Quantization (TorchAO checkpoint, every weight rebuilt and validated)\n\n");
  if (!w.quantization_config.is_null())
    fmt::print("quantization_config: {}\n\n", w.quantization_config.dump());
  fmt::print("| module | type | bits/weight | bytes |\n|---|---|---:|---:|\n");
  size_t qbytes = 0;
  for (const auto& [fqn, q] : w.linears) {
    fmt::print("| {} | {} | {:.2f} | {} |\n", fqn, q->str(), q->bits_per_weight(), q->nbytes());
    qbytes += q->nbytes();
  }
  size_t dbytes = 0;
  for (const auto& d : w.dense) dbytes += d.tensor.nbytes();
  fmt::print("\nquantized Linear weights: {} ({} bytes), other tensors: {} ({} bytes)\n",
             w.linears.size(), qbytes, w.dense.size(), dbytes);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

int run_info(const InfoArgs& a) {
  io::ModelFiles m = io::open_model_files(a.path);
  std::optional<quant::QuantizedWeights> quantized;
  if (quant::is_torchao_checkpoint(m)) quantized = quant::load_quantized_weights(m);
  AO_CHECK(a.dump_dequantized.empty() || quantized,
           "--dump-dequantized: {} is not a TorchAO-quantized checkpoint", a.path);
  if (!a.dump_dequantized.empty()) dump_dequantized(*quantized, a.dump_dequantized);
  int64_t params = 0, bytes = 0;
  for (const auto& t : m.tensors) {
    params += t.tensor.numel();
    bytes += static_cast<int64_t>(t.tensor.nbytes());
  }
  // A quantized checkpoint stores packed elements; the model's parameters come from its shape.
  const int64_t logical_params = quantized && m.config ? m.config->parameter_count() : params;
  if (a.json) {
    nlohmann::ordered_json j;
    j["path"] = m.path;
    j["format"] = m.format;
    if (m.config) {
      const auto& c = *m.config;
      j["config"] = {{"architecture", c.architecture}, {"dim", c.dim},          {"hidden_dim", c.hidden_dim},
                     {"n_layers", c.n_layers},         {"n_heads", c.n_heads},  {"n_kv_heads", c.n_kv_heads},
                     {"head_dim", c.head_dim},         {"vocab_size", c.vocab_size},
                     {"max_seq_len", c.max_seq_len},   {"norm_eps", c.norm_eps}, {"rope_theta", c.rope_theta},
                     {"tie_embeddings", c.tie_embeddings}};
    }
    j["parameters"] = logical_params;
    j["stored_elements"] = params;
    j["tensor_bytes"] = bytes;
    j["metadata"] = m.metadata;
    if (quantized) j["quantization"] = quantization_json(*quantized);
    if (a.tensors) {
      j["tensors"] = nlohmann::ordered_json::array();
      for (const auto& t : m.tensors)
        j["tensors"].push_back(
            {{"name", t.name}, {"dtype", dtype_name(t.tensor.dtype())}, {"shape", t.tensor.shape()},
             {"bytes", t.tensor.nbytes()}});
    }
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  fmt::print("# {}\n\nformat: {}\n", m.path, m.format);
  if (m.config) {
    const auto& c = *m.config;
    fmt::print(
        "architecture: {}\ndim: {}\nhidden_dim: {}\nn_layers: {}\nn_heads: {}\nn_kv_heads: {}\nhead_dim: {}\n"
        "vocab_size: {}\nmax_seq_len: {}\nnorm_eps: {:g}\nrope_theta: {:g}{}\ntie_embeddings: {}\n",
        c.architecture, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size,
        c.max_seq_len, c.norm_eps, c.rope_theta, c.rope_interleaved ? " (interleaved pairs)" : "",
        c.tie_embeddings);
  }
  if (!m.tokenizer_path.empty()) fmt::print("tokenizer: {}\n", m.tokenizer_path);
  for (const auto& [k, v] : m.metadata) {
    // TorchAO's per-tensor entries ({"_type": ...}) are shown by the quantization table below.
    if (quantized && (k == "tensor_names" || v.starts_with("{\"_type\""))) continue;
    fmt::print("metadata {}: {}\n", k, v.size() > 200 ? v.substr(0, 200) + "..." : v);
  }
  if (a.tensors) {
    fmt::print("\n| tensor | dtype | shape | bytes |\n|---|---|---|---:|\n");
    for (const auto& t : m.tensors)
      fmt::print("| {} | {} | {} | {} |\n", t.name, dtype_name(t.tensor.dtype()), shape_str(t.tensor.shape()),
                 t.tensor.nbytes());
  }
  fmt::print("\ntensors: {}\nparameters: {}\n", m.tensors.size(), logical_params);
  if (logical_params != params) fmt::print("stored elements: {} (packed quantized data)\n", params);
  fmt::print("tensor bytes: {} ({})\n", bytes, human_bytes(static_cast<double>(bytes)));
  if (quantized) print_quantization(*quantized);
  if (!a.dump_dequantized.empty())
    fmt::print("\ndequantized weights and linear outputs written to {}\n", a.dump_dequantized);
  return 0;
}

const bool registered = register_command({"info", "Show a checkpoint's config, tensors and parameter count", 10,
                                          [](CLI::App* sub) {
                                            auto a = std::make_shared<InfoArgs>();
                                            sub->add_option("path", a->path,
                                                            "safetensors file, HF model folder or llama2.c .bin")
                                                ->required();
                                            sub->add_flag("--json", a->json, "print JSON instead of markdown");
                                            sub->add_flag("!--no-tensors", a->tensors, "omit the tensor table");
                                            sub->add_option("--dump-dequantized", a->dump_dequantized,
                                                            "TorchAO-quantized checkpoints: write <module>.weight "
                                                            "(dequantized f32), <module>.x_m{1,16} (x[i] = sin(0.37 i "
                                                            "+ 0.1)) and <module>.linear_m{1,16} (linear of x) to this "
                                                            ".safetensors file");
                                            return [a] { return run_info(*a); };
                                          }});

}  // namespace
}  // namespace ao::cli

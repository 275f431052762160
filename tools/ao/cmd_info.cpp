// ao info PATH — what a checkpoint holds: config, tensors (dtype, shape, bytes), parameters.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "ao/io/model_files.h"
#include "command.h"

namespace ao::cli {
namespace {

struct InfoArgs {
  std::string path;
  bool json = false;
  bool tensors = true;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

int run_info(const InfoArgs& a) {
  io::ModelFiles m = io::open_model_files(a.path);
  int64_t params = 0, bytes = 0;
  for (const auto& t : m.tensors) {
    params += t.tensor.numel();
    bytes += static_cast<int64_t>(t.tensor.nbytes());
  }
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
    j["parameters"] = params;
    j["tensor_bytes"] = bytes;
    j["metadata"] = m.metadata;
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
  for (const auto& [k, v] : m.metadata)
    fmt::print("metadata {}: {}\n", k, v.size() > 200 ? v.substr(0, 200) + "..." : v);
  if (a.tensors) {
    fmt::print("\n| tensor | dtype | shape | bytes |\n|---|---|---|---:|\n");
    for (const auto& t : m.tensors)
      fmt::print("| {} | {} | {} | {} |\n", t.name, dtype_name(t.tensor.dtype()), shape_str(t.tensor.shape()),
                 t.tensor.nbytes());
  }
  fmt::print("\ntensors: {}\nparameters: {}\ntensor bytes: {} ({})\n", m.tensors.size(), params, bytes,
             human_bytes(static_cast<double>(bytes)));
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
                                            return [a] { return run_info(*a); };
                                          }});

}  // namespace
}  // namespace ao::cli

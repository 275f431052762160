// Model registry: HF `architectures` names (and "llama2.c") map to builders. load_model()
// opens a HF folder, a .safetensors file or a llama2.c .bin and builds the model.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ao/io/model_files.h"
#include "ao/models/llama.h"

namespace ao::models {

using ModelBuilder = std::function<std::unique_ptr<CausalLM>(
    const io::ModelConfig&, std::vector<io::NamedTensor>, const LoadOptions&, const std::string& source)>;

void register_architecture(const std::string& architecture, ModelBuilder builder);
std::vector<std::string> registered_architectures();  // sorted

// Builds from a config and HF-named tensors; throws for an unregistered architecture.
std::unique_ptr<CausalLM> build_model(const io::ModelConfig& config, std::vector<io::NamedTensor> tensors,
                                      const LoadOptions& opts = {}, const std::string& source = "model");

struct LoadedModel {
  std::unique_ptr<CausalLM> model;
  io::ModelFiles files;  // config, tokenizer path, file size (tensors moved into the model)
};
LoadedModel load_model(const std::string& path, const LoadOptions& opts = {});

// Random-weight models with the shapes of known checkpoints, for benchmarks:
// "stories15M", "stories110M", "tinyllama-1.1b", "llama3-1b", "llama2-7b", "llama3-8b",
// "qwen2-0.5b", "mistral-7b" (the config can be edited, e.g. fewer layers, before building).
std::vector<std::string> synthetic_model_names();
io::ModelConfig synthetic_config(const std::string& name);
std::unique_ptr<CausalLM> synthetic_model(const io::ModelConfig& config, uint64_t seed, const LoadOptions& opts = {});

}  // namespace ao::models

// Model registry: HF `architectures` names (and "llama2.c") map to builders. load_model()
// opens a HF folder, a .safetensors file or a llama2.c .bin and builds the model.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ao/io/model_files.h"
#include "ao/models/llama.h"
#include "ao/text/tokenizer.h"

namespace ao::models {

using ModelBuilder = std::function<std::unique_ptr<CausalLM>(
    const io::ModelConfig&, std::vector<io::NamedTensor>, const LoadOptions&,
    const std::string& source, const LinearWeightMap& prebuilt)>;

void register_architecture(const std::string& architecture, ModelBuilder builder);
std::vector<std::string> registered_architectures();  // sorted

// Builds from a config and HF-named tensors (plus Linear weights given by module FQN, e.g.
// quantized ones); throws for an unregistered architecture.
std::unique_ptr<CausalLM> build_model(const io::ModelConfig& config,
                                      std::vector<io::NamedTensor> tensors,
                                      const LoadOptions& opts = {},
                                      const std::string& source = "model",
                                      const LinearWeightMap& prebuilt = {});

struct LoadedModel {
  std::unique_ptr<CausalLM> model;
  io::ModelFiles files;  // config, tokenizer path, file size (tensors moved into the model)
};
// TorchAO quantized checkpoints (as `ao quantize` or transformers write them) load with
// their quantized Linear weights in place.
LoadedModel load_model(const std::string& path, const LoadOptions& opts = {});

// Loads the tokenizer at `path`, or the one found next to the model when `path` is empty,
// and checks it fits the model: every token id it can produce (and its BOS/EOS) must be
// inside the model's vocabulary. Throws ao::Error naming both sizes otherwise.
std::unique_ptr<text::Tokenizer> load_model_tokenizer(const LoadedModel& m,
                                                      const std::string& path = "");
void check_tokenizer_fits(const text::Tokenizer& tok, const CausalLM& model,
                          const std::string& tokenizer_path);

// Random-weight models with the shapes of known checkpoints, for benchmarks:
// "stories15M", "stories110M", "tinyllama-1.1b", "llama3-1b", "llama2-7b", "llama3-8b",
// "qwen2-0.5b", "mistral-7b" (the config can be edited, e.g. fewer layers, before building).
std::vector<std::string> synthetic_model_names();
io::ModelConfig synthetic_config(const std::string& name);
// Weights are drawn in f32 and stored as `weight_dtype` (f32, bf16 or f16).
std::unique_ptr<CausalLM> synthetic_model(const io::ModelConfig& config, uint64_t seed,
                                          const LoadOptions& opts = {},
                                          DType weight_dtype = DType::f32);

}  // namespace ao::models

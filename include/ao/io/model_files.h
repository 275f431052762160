// Opens whatever a user points at — a HF model folder (config.json + safetensors, maybe
// sharded), a single .safetensors file, or a llama2.c .bin — and returns its config (when
// there is one), its tensors as zero-copy views, and the tokenizer file found next to it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ao/io/model_config.h"
#include "ao/io/safetensors.h"

namespace ao::io {

struct ModelFiles {
  std::string path;
  std::string format;  // "hf-folder", "safetensors", "llama2c"
  std::optional<ModelConfig> config;
  std::vector<NamedTensor> tensors;             // natural name order (layers.2 < layers.10), zero-copy
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (merged over shards)
  std::string tokenizer_path;                   // "" when none was found
  int64_t file_bytes = 0;                       // size of the weight files on disk
};

ModelFiles open_model_files(const std::string& path);

}  // namespace ao::io

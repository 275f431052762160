// Quantized checkpoints in TorchAO's flattened safetensors layout, as transformers writes
// them: a quantized weight `<module>.weight` is stored as `<module>._weight_<name>` for each
// data tensor of its type, the file metadata holds, per tensor name, {"_type", "_data",
// "_tensor_data_names"} (plain tensors: {"_type": "Tensor"}) plus "tensor_names"; and
// config.json carries quantization_config {quant_method: torchao, quant_type: {default: ...}}.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ao/io/model_files.h"
#include "ao/quant/config.h"

namespace ao::quant {

// ---- writing ----------------------------------------------------------------------------

struct QuantizedTensorRow {
  std::string name;    // tensor name in the source ("model.layers.0.mlp.down_proj.weight")
  std::string format;  // "Int4Tensor", ... or "dense" when kept as is
  std::string config;  // short config name or "" for dense
  Shape shape;
  int64_t bytes_before = 0, bytes_after = 0;
  double seconds = 0;
};
struct QuantizeSummary {
  std::vector<QuantizedTensorRow> rows;
  int64_t bytes_before = 0, bytes_after = 0, file_bytes = 0;
  int quantized = 0;
  double seconds = 0;
  std::string markdown() const;  // | tensors | format | bytes before | bytes after | time | ...
  nlohmann::ordered_json json() const;       // totals plus bits per quantized weight
  double quantized_bits_per_weight() const;  // over the weights that were quantized
};
using QuantizeProgress = std::function<void(size_t done, size_t total, const std::string& name)>;

// Quantizes every Linear weight of `in` that `plan` assigns a config and writes a Hugging
// Face folder `out_dir` (config.json with quantization_config, model.safetensors, the
// tokenizer). Everything is written into a temporary sibling folder first and renamed at the
// end; an existing `out_dir` is an error unless `overwrite`. llama2.c inputs get HF names and
// the q/k row permutation HF's rotate-half RoPE expects, so the folder is a valid HF Llama.
QuantizeSummary quantize_model(const io::ModelFiles& in, const QuantPlan& plan,
                               const std::string& out_dir, bool overwrite = false,
                               const QuantizeProgress& progress = {});

// How quantize_model stores one quantized Linear weight `<module>.weight`: appends its data
// tensors, in their stored dtypes, as `<module>._weight_<name>` to `tensors` and sets
// `metadata[weight_name]` to q.metadata() (the caller adds "tensor_names" and "format"). A
// weight rebuilt by load_quantized_weights is written back as the checkpoint held it.
void append_quantized_weight(const std::string& weight_name, const QTensor& q,
                             std::vector<io::NamedTensor>& tensors,
                             std::map<std::string, std::string>& metadata);

// ---- reading ----------------------------------------------------------------------------

// True when the files hold TorchAO quantized tensors (metadata "tensor_names", or a
// quantization_config with quant_method "torchao" in config.json).
bool is_torchao_checkpoint(const io::ModelFiles& m);

struct QuantizedWeights {
  std::map<std::string, QTensorPtr>
      linears;                         // module FQN ("model.layers.0.mlp.down_proj") -> weight
  std::vector<io::NamedTensor> dense;  // every other tensor, under its usual name
  nlohmann::json quantization_config;  // from config.json (null when absent)

  // For model builders that expect every weight by its usual name: the dense tensors plus,
  // per quantized Linear, its dequantized f32 weight as "<fqn>.weight" (replace those with
  // the quantized weights afterwards, see load_quantized_weights).
  std::vector<io::NamedTensor> builder_tensors() const;
};

// Rebuilds the quantized weights of a TorchAO checkpoint. How a model loader uses it:
//   io::ModelFiles files = io::open_model_files(path);
//   if (quant::is_torchao_checkpoint(files)) {
//     quant::QuantizedWeights q = quant::load_quantized_weights(files);
//     auto model = models::build_model(*files.config, q.builder_tensors(), opts, path);
//     for (const auto& [fqn, w] : q.linears) model->set_weight(fqn, w);
//   }
// It checks that the metadata and the tensors agree (every declared data tensor present with the
// shape/dtype its attributes imply, no stray tensors). A checkpoint without TorchAO metadata yields
// all tensors dense.
QuantizedWeights load_quantized_weights(const io::ModelFiles& m);

}  // namespace ao::quant

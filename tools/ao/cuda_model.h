// A model on the CudaEngine for `ao generate/perplexity --device cuda`: the files opened once,
// TorchAO quantized Linear weights mapped onto the engine's layouts (runtime/cuda_weights.h), the
// tokenizer the CPU path would use, and the engine. CUDA builds only.
#pragma once

namespace ao::cli {
// Help text of --cuda-format (ao generate, ao perplexity).
inline constexpr const char* kCudaFormatHelp =
    "with --device cuda: weights bf16, int8wo, int4wo-gN (N = 32..256), fp8-row, fp8-tensor "
    "(weight-only) or fp8dq-row, fp8dq-tensor (fp8 weights and activations) (TorchAO "
    "checkpoints keep their own quantized weights; this applies to the others)";

}  // namespace ao::cli

#ifdef AO_WITH_CUDA

#include <cstdint>
#include <memory>
#include <string>

#include "ao/io/model_files.h"
#include "ao/runtime/cuda_engine.h"
#include "ao/runtime/cuda_weights.h"
#include "ao/text/tokenizer.h"

namespace ao::cli {

struct CudaModelRequest {
  std::string command;      // for messages: "generate", "perplexity"
  std::string model;        // HF folder, .safetensors or llama2.c .bin
  std::string tokenizer;    // "" : the one next to the model
  std::string cuda_format;  // for the weights a TorchAO checkpoint leaves dense
  int64_t ctx = 0;          // KV-cache capacity; 0: min(model maximum, 4096); capped at the maximum
  bool cuda_graph = true;   // capture the decode step (perplexity only prefills)
};

struct CudaModel {
  io::ModelFiles files;
  runtime::CudaModelWeights weights;
  std::unique_ptr<text::Tokenizer> tokenizer;
  runtime::CudaEngineOptions options;
  std::unique_ptr<runtime::CudaEngine> engine;

  const io::ModelConfig& config() const { return weights.config; }
  int64_t ctx() const { return options.max_seq_len; }
  // "cuda NVIDIA H200, TorchAO checkpoint" or "cuda NVIDIA H200, int8wo".
  std::string description() const;
  // The "weights: ..." lines of a TorchAO checkpoint (how each type was mapped), to stderr.
  void print_weight_mapping() const;
};

// Throws ao::Error for a machine without a visible GPU, unreadable files or a bad format, and
// ao::NotSupported for what the engine lacks (architectures, a context beyond a sliding window).
CudaModel load_cuda_model(const CudaModelRequest& request);

}  // namespace ao::cli

#endif  // AO_WITH_CUDA

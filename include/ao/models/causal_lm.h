// CausalLM: what the runtime (generate, perplexity, bench) and quantization need from a
// decoder-only language model. One sequence at a time; the model owns its KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ao/io/model_config.h"
#include "ao/io/safetensors.h"
#include "ao/nn/linear.h"

namespace ao::models {

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  CausalLM() = default;
  CausalLM(const CausalLM&) = delete;
  CausalLM& operator=(const CausalLM&) = delete;

  virtual const io::ModelConfig& config() const = 0;
  int64_t vocab_size() const { return config().vocab_size; }
  virtual int64_t context_size() const = 0;  // KV cache capacity in tokens
  virtual int64_t n_past() const = 0;        // tokens already in the cache
  virtual void reset() = 0;                  // forget the cached sequence
  // Rewinds the cache to its first n tokens (n <= n_past()).
  virtual void truncate(int64_t n) = 0;

  // Appends n tokens at positions n_past() .. n_past()+n-1. With all_logits, logits is
  // [n, vocab]; otherwise [vocab] for the last token. Throws if the context would overflow.
  virtual void forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) = 0;

  // Every Linear layer by fully qualified name (model.layers.3.mlp.down_proj, lm_head), in
  // model order. The pointers stay valid for the model's lifetime.
  virtual std::vector<std::pair<std::string, nn::Linear*>> linears() = 0;
  // Swaps one Linear's weight (e.g. for a quantized one); throws for an unknown name or shape.
  void set_weight(const std::string& fqn, std::shared_ptr<const quant::LinearWeight> w);
  // The tensors the model was built from, under their checkpoint names and dtypes.
  virtual const std::vector<io::NamedTensor>& source_tensors() const = 0;

  virtual int64_t parameter_count() const = 0;  // as in the checkpoint (tied weights once)
  virtual size_t weight_bytes() const = 0;      // bytes the weights occupy now (quantized: packed)
};

}  // namespace ao::models

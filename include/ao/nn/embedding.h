// Token embedding table [vocab, dim] (kept as stored: f32, bf16 or f16; rows are widened to
// f32 on lookup) and RMSNorm with a learned scale (f32).
#pragma once

#include <string>

#include "ao/core/tensor.h"

namespace ao::nn {

class Embedding {
 public:
  Embedding() = default;
  Embedding(std::string name, const Tensor& weight);  // [vocab, dim], any float dtype
  const std::string& name() const { return name_; }
  const Tensor& weight() const { return weight_; }  // contiguous, f32 / bf16 / f16
  int64_t vocab_size() const { return weight_.size(0); }
  int64_t dim() const { return weight_.size(1); }
  // out: [n, dim]. Throws for a token id outside [0, vocab).
  void forward(const int32_t* tokens, int64_t n, float* out) const;

 private:
  std::string name_;
  Tensor weight_;
};

class RMSNorm {
 public:
  RMSNorm() = default;
  RMSNorm(std::string name, const Tensor& weight, float eps);
  const std::string& name() const { return name_; }
  const Tensor& weight() const { return weight_; }
  // x, y: [rows, dim]; y may alias x.
  void forward(const float* x, float* y, int64_t rows) const;

 private:
  std::string name_;
  Tensor weight_;
  float eps_ = 1e-5f;
};

}  // namespace ao::nn

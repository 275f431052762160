// Linear layer y = x W^T (+ b). The weight is any quant::LinearWeight (dense or quantized),
// shared and immutable, so quantization swaps it with set_weight() and nothing else changes.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "ao/core/tensor.h"
#include "ao/quant/linear_weight.h"

namespace ao::nn {

class Linear {
 public:
  Linear() = default;
  // `bias`, when defined, is f32 [out_features] (other float dtypes are widened).
  Linear(std::string name, std::shared_ptr<const quant::LinearWeight> weight, Tensor bias = {});

  // Fully qualified: model.layers.3.mlp.down_proj.
  const std::string& name() const { return name_; }
  const std::shared_ptr<const quant::LinearWeight>& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  int64_t in_features() const { return weight_->in_features(); }
  int64_t out_features() const { return weight_->out_features(); }
  // Replaces the weight; throws if its shape differs from the current one.
  void set_weight(std::shared_ptr<const quant::LinearWeight> w);

  // Called with every input batch x [M, in_features] before the product: how calibration
  // (GPTQ, AWQ, SmoothQuant statistics) sees a layer's activations. Empty: none.
  using InputObserver = std::function<void(const Linear& self, const float* x, int64_t M)>;
  void set_input_observer(InputObserver obs) { observer_ = std::move(obs); }

  // x: [M, in_features], y: [M, out_features] (overwritten).
  void forward(const float* x, int64_t M, float* y) const;

 private:
  std::string name_;
  std::shared_ptr<const quant::LinearWeight> weight_;
  Tensor bias_;
  InputObserver observer_;
};

}  // namespace ao::nn

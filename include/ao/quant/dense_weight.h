// DenseWeight: an unquantized Linear weight held as f32 [N, K] (bf16/f16 checkpoints are
// widened once at load; f32 checkpoints stay zero-copy views of the mapped file).
// Decode (M == 1) runs a multi-threaded AVX2 GEMV, prefill an OpenBLAS sgemm.
#pragma once

#include <memory>

#include "ao/quant/linear_weight.h"

namespace ao::quant {

class DenseWeight final : public LinearWeight {
 public:
  // `w` is a 2-D CPU tensor of any float dtype; `name` is used in error messages.
  explicit DenseWeight(const Tensor& w, const std::string& name = "weight");

  std::string type_name() const override { return "DenseWeight"; }
  int64_t out_features() const override { return weight_.size(0); }
  int64_t in_features() const override { return weight_.size(1); }
  void linear(const float* x, int64_t M, float* y) const override;
  Tensor dequantize() const override { return weight_; }
  size_t nbytes() const override { return weight_.nbytes(); }

  const Tensor& weight() const { return weight_; }  // f32, contiguous [N, K]

 private:
  Tensor weight_;
};

}  // namespace ao::quant

// DenseWeight: an unquantized Linear weight [N, K] kept in the dtype it was stored in — f32,
// bf16 or f16, zero-copy when the tensor views a mapped checkpoint. Compute is fp32: 16-bit
// weights are widened exactly on the fly. Decode (M == 1) runs a multi-threaded AVX2 GEMV
// (half the memory traffic with 16-bit weights), prefill an OpenBLAS sgemm.
#pragma once

#include <memory>

#include "ao/quant/linear_weight.h"

namespace ao::quant {

class DenseWeight final : public LinearWeight {
 public:
  // `w` is a 2-D CPU tensor of dtype f32, bf16 or f16 (f64 is narrowed to f32); `name` is
  // used in error messages.
  explicit DenseWeight(const Tensor& w, const std::string& name = "weight");

  std::string type_name() const override { return "DenseWeight"; }
  int64_t out_features() const override { return weight_.size(0); }
  int64_t in_features() const override { return weight_.size(1); }
  void linear(const float* x, int64_t M, float* y) const override;
  Tensor dequantize() const override { return weight_.to(DType::f32); }
  size_t nbytes() const override { return weight_.nbytes(); }

  const Tensor& weight() const { return weight_; }  // contiguous [N, K] in the stored dtype

 private:
  Tensor weight_;
};

}  // namespace ao::quant

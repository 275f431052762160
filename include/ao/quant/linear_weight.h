// The weight of a Linear layer: dense (f32/bf16/f16) or a quantized tensor type. The layer
// asks its weight to compute y = x W^T; each weight type brings its own kernels.
#pragma once

#include <cstdint>
#include <string>

#include "ao/core/tensor.h"

namespace ao::quant {

class LinearWeight {
 public:
  virtual ~LinearWeight() = default;
  virtual std::string type_name() const = 0;  // "DenseWeight", "Int8Tensor", "Int4Tensor", ...
  virtual int64_t out_features() const = 0;   // N
  virtual int64_t in_features() const = 0;    // K
  // x: [M, K] f32 row-major, y: [M, N] f32 row-major (overwritten). CPU memory.
  virtual void linear(const float* x, int64_t M, float* y) const = 0;
  // The weight as f32 [N, K] (the exact values linear() multiplies by).
  virtual Tensor dequantize() const = 0;
  // Bytes the weight occupies (data + scales + zero points).
  virtual size_t nbytes() const = 0;
};

}  // namespace ao::quant

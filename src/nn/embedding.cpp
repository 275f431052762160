#include "ao/nn/embedding.h"

#include <cstring>

#include "ao/core/error.h"
#include "kernels/cpu/elementwise.h"

namespace ao::nn {
namespace {

Tensor as_f32(const Tensor& t) {
  Tensor c = t.to(Device::cpu());
  return c.dtype() == DType::f32 ? c.contiguous() : c.contiguous().to(DType::f32);
}

}  // namespace

Embedding::Embedding(std::string name, const Tensor& weight) : name_(std::move(name)) {
  AO_CHECK(weight.dim() == 2, "{}.weight: expected 2-D [vocab, dim], got {}", name_,
           shape_str(weight.shape()));
  const DType t = weight.dtype();
  weight_ = t == DType::f32 || t == DType::bf16 || t == DType::f16
                ? weight.to(Device::cpu()).contiguous()
                : as_f32(weight);
}

void Embedding::forward(const int32_t* tokens, int64_t n, float* out) const {
  const int64_t V = vocab_size(), D = dim();
  const size_t row_bytes = dtype_size(weight_.dtype()) * D;
  const auto* w = static_cast<const uint8_t*>(weight_.data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    AO_CHECK(tokens[i] >= 0 && tokens[i] < V, "{}: token id {} is outside the vocabulary [0, {})",
             name_, tokens[i], V);
    convert_buffer(w + tokens[i] * row_bytes, weight_.dtype(), out + i * D, DType::f32, D);
  }
}

RMSNorm::RMSNorm(std::string name, const Tensor& weight, float eps)
    : name_(std::move(name)), eps_(eps) {
  AO_CHECK(weight.dim() == 1, "{}.weight: expected 1-D, got {}", name_, shape_str(weight.shape()));
  weight_ = as_f32(weight);
}

void RMSNorm::forward(const float* x, float* y, int64_t rows) const {
  kernels::cpu::rmsnorm_f32(x, weight_.data<float>(), y, rows, weight_.size(0), eps_);
}

}  // namespace ao::nn

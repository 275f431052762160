#include "ao/nn/linear.h"

#include "ao/core/error.h"

namespace ao::nn {

Linear::Linear(std::string name, std::shared_ptr<const quant::LinearWeight> weight, Tensor bias)
    : name_(std::move(name)), weight_(std::move(weight)) {
  AO_CHECK(weight_ != nullptr, "{}: Linear needs a weight", name_);
  if (bias.defined()) {
    AO_CHECK(bias.dim() == 1 && bias.size(0) == weight_->out_features(),
             "{}.bias: has shape {}, expected [{}]", name_, shape_str(bias.shape()),
             weight_->out_features());
    bias_ = bias.to(Device::cpu()).contiguous().to(DType::f32);
  }
}

void Linear::set_weight(std::shared_ptr<const quant::LinearWeight> w) {
  AO_CHECK(w != nullptr, "{}: set_weight needs a weight", name_);
  AO_CHECK(
      w->out_features() == weight_->out_features() && w->in_features() == weight_->in_features(),
      "{}: new weight ({}) is [{}, {}], expected [{}, {}]", name_, w->type_name(),
      w->out_features(), w->in_features(), weight_->out_features(), weight_->in_features());
  weight_ = std::move(w);
}

void Linear::forward(const float* x, int64_t M, float* y) const {
  if (observer_) observer_(*this, x, M);
  weight_->linear(x, M, y);
  if (bias_.defined()) {
    const float* b = bias_.data<float>();
    const int64_t N = out_features();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) y[m * N + n] += b[n];
  }
}

}  // namespace ao::nn

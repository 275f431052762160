#include "ao/quant/dense_weight.h"

#include "ao/core/error.h"
#include "kernels/cpu/matmul.h"

namespace ao::quant {

DenseWeight::DenseWeight(const Tensor& w, const std::string& name) {
  AO_CHECK(w.defined() && w.dim() == 2, "{}: a Linear weight must be 2-D, got {}", name,
           w.defined() ? shape_str(w.shape()) : "an undefined tensor");
  AO_CHECK(dtype_info(w.dtype()).is_float && !dtype_info(w.dtype()).is_packed,
           "{}: DenseWeight needs a float tensor (f32/f16/bf16), got {}", name,
           dtype_name(w.dtype()));
  Tensor c = w.to(Device::cpu());
  weight_ = c.dtype() == DType::f32 ? c.contiguous() : c.contiguous().to(DType::f32);
}

void DenseWeight::linear(const float* x, int64_t M, float* y) const {
  kernels::cpu::gemm_f32(x, weight_.data<float>(), y, M, weight_.size(0), weight_.size(1));
}

}  // namespace ao::quant

#include "ao/quant/dense_weight.h"

#include "ao/core/error.h"
#include "kernels/cpu/matmul.h"

namespace ao::quant {

DenseWeight::DenseWeight(const Tensor& w, const std::string& name) {
  AO_CHECK(w.defined() && w.dim() == 2, "{}: a Linear weight must be 2-D, got {}", name,
           w.defined() ? shape_str(w.shape()) : "an undefined tensor");
  const DType t = w.dtype();
  AO_CHECK(t == DType::f32 || t == DType::bf16 || t == DType::f16 || t == DType::f64,
           "{}: DenseWeight needs f32, bf16 or f16, got {}", name, dtype_name(t));
  Tensor c = w.to(Device::cpu()).contiguous();
  weight_ = t == DType::f64 ? c.to(DType::f32) : c;
}

void DenseWeight::linear(const float* x, int64_t M, float* y) const {
  const int64_t N = weight_.size(0), K = weight_.size(1);
  switch (weight_.dtype()) {
    case DType::bf16:
      return kernels::cpu::gemm_half(x, weight_.data<uint16_t>(), kernels::cpu::HalfType::bf16, y,
                                     M, N, K);
    case DType::f16:
      return kernels::cpu::gemm_half(x, weight_.data<uint16_t>(), kernels::cpu::HalfType::f16, y, M,
                                     N, K);
    default:
      return kernels::cpu::gemm_f32(x, weight_.data<float>(), y, M, N, K);
  }
}

}  // namespace ao::quant

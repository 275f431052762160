// GEMV kernels for int4 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_int4)

namespace ao::cuda {
template void gemv_format<WeightFormat::int4>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
bool gemv_takes_int4_digits(const DeviceWeight& w) {
  return w.format == WeightFormat::int4 && takes_int4_digits(w, tma_plan<WeightFormat::int4>(w, 1));
}
}  // namespace ao::cuda

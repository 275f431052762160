// GEMV kernels for fp8 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_fp8)

namespace ao::cuda {
template void gemv_format<WeightFormat::fp8>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
}  // namespace ao::cuda

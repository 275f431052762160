// GEMV kernels for bf16 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_bf16)

namespace ao::cuda {
template void gemv_format<WeightFormat::bf16>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
}  // namespace ao::cuda

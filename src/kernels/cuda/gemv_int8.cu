// GEMV kernels for int8 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_int8)

namespace ao::cuda {
template void gemv_format<WeightFormat::int8>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
}  // namespace ao::cuda

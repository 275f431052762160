// GEMV kernels for int4 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_int4)

namespace ao::cuda {
template void gemv_format<WeightFormat::int4>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
}  // namespace ao::cuda

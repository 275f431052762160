// GEMV kernels for bf16 weights (see gemv_impl.cuh).
#include "gemv_impl.cuh"

AO_KERNEL_TRACE_TU(gemv_bf16)

namespace ao::cuda {
template void gemv_format<WeightFormat::bf16>(const DeviceWeight&, const GemvArgs&, cudaStream_t);
template bool gemv_chain_format<WeightFormat::bf16>(const GemvChainStep*, int, uint64_t*,
                                                    cudaStream_t);
}  // namespace ao::cuda

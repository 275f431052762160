// CUDA error reporting: every CUDA runtime call goes through AO_CUDA_CHECK, every cuBLAS /
// cuBLASLt call through AO_CUBLAS_CHECK.
#include "ao/core/error.h"
#include "ao/kernels/cuda/cublas_check.h"
#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda {

void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  throw Error(fmt::format("CUDA error in {} ({}:{}): {} ({})", call, file, line,
                          cudaGetErrorString(e), cudaGetErrorName(e)));
}

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(fmt::format("cuBLAS error in {} ({}:{}): {}", call, file, line,
                          cublasGetStatusString(status)));
}

void fail(const char* msg) { throw Error(msg); }

}  // namespace ao::cuda

// Error checks for cuBLAS and cuBLASLt calls (both return cublasStatus_t): every call goes
// through AO_CUBLAS_CHECK, whose ao::Error names the call, file, line and status.
#pragma once

#include <cublas_api.h>

namespace ao::cuda {

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line);
#define AO_CUBLAS_CHECK(call) ::ao::cuda::check_cublas((call), #call, __FILE__, __LINE__)

}  // namespace ao::cuda

// The CUDA branches of ao::Storage and ao::copy_bytes (src/core/device.cpp calls these under
// AO_WITH_CUDA). Allocation is stream-ordered (cudaMallocAsync on the default stream) from the
// device's memory pool, whose release threshold is raised so freed blocks are cached.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "ao/kernels/cuda/kernels.h"

namespace {
constexpr int kMaxDevices = 64;

void configure_pool_once(int dev) {
  static std::once_flag once[kMaxDevices];
  std::call_once(once[dev % kMaxDevices], [dev] {
    cudaMemPool_t pool;
    AO_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t threshold = UINT64_MAX;
    AO_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  });
}

// Makes `dev` current for the scope.
struct DeviceGuard {
  int prev = 0;
  explicit DeviceGuard(int dev) {
    AO_CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != dev) AO_CUDA_CHECK(cudaSetDevice(dev));
  }
  ~DeviceGuard() { cudaSetDevice(prev); }
};
}  // namespace

bool ao_cuda_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

void* ao_cuda_malloc(size_t bytes, int device) {
  DeviceGuard g(device);
  configure_pool_once(device);
  void* p = nullptr;
  AO_CUDA_CHECK(cudaMallocAsync(&p, bytes, 0));
  return p;
}

// Called from ~Storage: never throws (a failure leaves the block to the driver's teardown).
void ao_cuda_free(void* p, int device) {
  if (!p) return;
  int prev = 0;
  if (cudaGetDevice(&prev) != cudaSuccess) return;
  if (prev != device) cudaSetDevice(device);
  if (cudaFreeAsync(p, 0) != cudaSuccess) (void)cudaGetLastError();
  if (prev != device) cudaSetDevice(prev);
}

// kind: 0 host->device, 1 device->host, 2 device->device, 3 host->host, other: inferred.
void ao_cuda_memcpy(void* dst, const void* src, size_t bytes, int kind) {
  cudaMemcpyKind k = cudaMemcpyDefault;
  switch (kind) {
    case 0: k = cudaMemcpyHostToDevice; break;
    case 1: k = cudaMemcpyDeviceToHost; break;
    case 2: k = cudaMemcpyDeviceToDevice; break;
    case 3: k = cudaMemcpyHostToHost; break;
    default: break;
  }
  AO_CUDA_CHECK(cudaMemcpy(dst, src, bytes, k));
}

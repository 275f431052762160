#include "ao/core/device.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "ao/core/error.h"

#ifdef AO_WITH_CUDA
// Implemented in src/core/device_cuda.cu.
void* ao_cuda_malloc(size_t bytes, int device);
void ao_cuda_free(void* p, int device);
// kind: 0 host->device, 1 device->host, 2 device->device
void ao_cuda_memcpy(void* dst, const void* src, size_t bytes, int kind);
bool ao_cuda_available();
#endif

namespace ao {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda" || s == "gpu") return Device::cuda(0);
  if (s.starts_with("cuda:")) {
    const std::string idx = s.substr(5);
    char* end = nullptr;
    long i = std::strtol(idx.c_str(), &end, 10);
    if (!idx.empty() && *end == '\0' && i >= 0 && i < 1024) return Device::cuda(static_cast<int>(i));
  }
  fail("unknown device '{}': expected cpu, cuda or cuda:N", s);
}

bool cuda_available() {
#ifdef AO_WITH_CUDA
  return ao_cuda_available();
#else
  return false;
#endif
}

static void require_cuda(Device d) {
#ifndef AO_WITH_CUDA
  fail("device {} requested but this build of ao has no CUDA support (configure with -DAO_CUDA=ON)",
       d.str());
#else
  AO_CHECK(ao_cuda_available(), "device {} requested but no CUDA GPU is visible", d.str());
#endif
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  s->bytes_ = bytes;
  s->device_ = device;
  s->owned_ = true;
  const size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  if (device.is_cpu()) {
    s->data_ = std::aligned_alloc(kCpuAlignment, rounded == 0 ? kCpuAlignment : rounded);
    if (!s->data_) fail("out of host memory allocating {} bytes", bytes);
  } else {
    require_cuda(device);
#ifdef AO_WITH_CUDA
    s->data_ = ao_cuda_malloc(rounded == 0 ? kCpuAlignment : rounded, device.index);
#endif
  }
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t bytes, Device device,
                                       std::shared_ptr<void> owner) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->bytes_ = bytes;
  s->device_ = device;
  s->owned_ = false;
  s->owner_ = std::move(owner);
  return s;
}

Storage::~Storage() {
  if (!owned_ || !data_) return;
  if (device_.is_cpu()) {
    std::free(data_);
  } else {
#ifdef AO_WITH_CUDA
    ao_cuda_free(data_, device_.index);
#endif
  }
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
  require_cuda(dst_dev.is_cuda() ? dst_dev : src_dev);
#ifdef AO_WITH_CUDA
  const int kind = src_dev.is_cpu() ? 0 : dst_dev.is_cpu() ? 1 : 2;
  ao_cuda_memcpy(dst, src, bytes, kind);
#endif
}

}  // namespace ao

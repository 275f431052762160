// Devices and raw allocation: 64-byte aligned CPU memory, CUDA memory when built with CUDA.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace ao {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:1"; throws ao::Error otherwise.
Device parse_device(const std::string& s);

bool cuda_available();  // false when built without CUDA or no GPU is visible

constexpr size_t kCpuAlignment = 64;

// A block of memory on a device. Either owned (freed by the deleter) or a view into memory
// kept alive by `owner` (e.g. an mmap'ed file).
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(size_t bytes, Device device);
  static std::shared_ptr<Storage> wrap(void* data, size_t bytes, Device device,
                                       std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  bool owned_ = false;
  std::shared_ptr<void> owner_;
};

// Copies bytes between any two devices (host<->device, device<->device, host<->host).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

}  // namespace ao

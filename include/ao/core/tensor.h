// Tensor: shape, strides (in elements), dtype, device and shared storage. Views share the
// storage. Packed sub-byte dtypes are allowed only for contiguous tensors; their shape
// counts logical elements.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "ao/core/device.h"
#include "ao/core/dtype.h"
#include "ao/core/error.h"

namespace ao {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[4, 8]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;

  // Factories. Memory from empty() is uninitialized.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype = DType::f32);
  // Copies `values` into a new f32 CPU tensor.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  // Zero-copy view of external memory kept alive by `owner`.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype,
                          std::shared_ptr<void> owner, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return dtype_storage_bytes(dtype_, numel()); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  int64_t offset_bytes() const { return offset_bytes_; }

  void* data_ptr() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_ptr());
  }

  // Views (share storage).
  Tensor view(const Shape& shape) const;  // requires contiguous; one dim may be -1
  Tensor reshape(const Shape& shape) const;  // view if possible, else copy
  Tensor slice(int64_t d, int64_t start, int64_t end) const;  // [start, end) along d
  Tensor select(int64_t d, int64_t index) const;              // drops dimension d
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }

  // Copies.
  Tensor contiguous() const;  // self if already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;    // float/int conversion (round to nearest even)
  Tensor to(Device device) const;  // self if already there
  void copy_from(const Tensor& src);  // same shape & dtype; any strides/devices

  std::string str() const;  // "Tensor(bf16, [4, 8], cpu)"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_bytes_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::f32;
};

}  // namespace ao

#include "ao/core/tensor.h"

#include <cstring>
#include <limits>

namespace ao {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    AO_CHECK(d >= 0, "negative dimension in shape {}", shape_str(s));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      fail("shape {} has too many elements", shape_str(s));
    n *= d;
  }
  return n;
}

namespace {

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  const int64_t w = d < 0 ? d + ndim : d;
  AO_CHECK(w >= 0 && w < ndim, "{}: dimension {} out of range for a {}-d tensor", op, d, ndim);
  return w;
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.storage_ = Storage::allocate(dtype_storage_bytes(dtype, shape_numel(shape)), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_cpu()) {
    std::memset(t.data_ptr(), 0, t.nbytes());
  } else {
    std::vector<uint8_t> z(t.nbytes(), 0);
    copy_bytes(t.data_ptr(), device, z.data(), Device::cpu(), z.size());
  }
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype) {
  Tensor f = empty(shape, DType::f32);
  float* p = f.data<float>();
  for (int64_t i = 0, n = f.numel(); i < n; ++i) p[i] = value;
  return dtype == DType::f32 ? f : f.to(dtype);
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  AO_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
           "from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = empty(shape, DType::f32);
  std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                         Device device) {
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.storage_ = Storage::wrap(data, dtype_storage_bytes(dtype, shape_numel(shape)), device,
                             std::move(owner));
  return t;
}

int64_t Tensor::size(int64_t d) const { return shape_[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides_[wrap_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

void* Tensor::data_ptr() const {
  AO_CHECK(defined(), "data_ptr() on an undefined tensor");
  return static_cast<uint8_t*>(storage_->data()) + offset_bytes_;
}

Tensor Tensor::view(const Shape& shape) const {
  AO_CHECK(is_contiguous(), "view {} of a non-contiguous tensor {}: call contiguous() first",
           shape_str(shape), str());
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      AO_CHECK(infer < 0, "view: only one dimension may be -1 in {}", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      AO_CHECK(s[i] >= 0, "view: bad dimension in {}", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    AO_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in {} for {} elements",
             shape_str(shape), numel());
    s[infer] = numel() / known;
  }
  AO_CHECK(shape_numel(s) == numel(), "view: shape {} does not hold the {} elements of {}",
           shape_str(s), numel(), str());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  d = wrap_dim(d, dim(), "slice");
  AO_CHECK(!dtype_info(dtype_).is_packed, "slice of packed dtype {} is not supported",
           dtype_name(dtype_));
  AO_CHECK(0 <= start && start <= end && end <= shape_[d],
           "slice [{}, {}) out of range for dimension {} of size {}", start, end, d, shape_[d]);
  Tensor t = *this;
  t.offset_bytes_ += start * strides_[d] * static_cast<int64_t>(dtype_size(dtype_));
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  AO_CHECK(0 <= index && index < shape_[d], "select: index {} out of range for size {}", index,
           shape_[d]);
  Tensor t = slice(d, index, index + 1);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  AO_CHECK(!dtype_info(dtype_).is_packed, "transpose of packed dtype {} is not supported",
           dtype_name(dtype_));
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

namespace {

// Copies a strided CPU tensor into contiguous memory, element by element (any byte size).
void gather_strided(const Tensor& src, uint8_t* dst) {
  const size_t es = dtype_size(src.dtype());
  const int64_t n = src.numel(), nd = src.dim();
  if (n == 0) return;
  const auto* base = static_cast<const uint8_t*>(src.data_ptr());
  std::vector<int64_t> idx(nd, 0);
  // Innermost dimension copied in a tight loop.
  const int64_t inner = nd ? src.shape()[nd - 1] : 1;
  const int64_t inner_stride = nd ? src.strides()[nd - 1] : 1;
  for (int64_t done = 0; done < n; done += inner) {
    int64_t off = 0;
    for (int64_t i = 0; i + 1 < nd; ++i) off += idx[i] * src.strides()[i];
    for (int64_t j = 0; j < inner; ++j)
      std::memcpy(dst + (done + j) * es, base + (off + j * inner_stride) * es, es);
    for (int64_t i = nd - 2; i >= 0; --i) {
      if (++idx[i] < src.shape()[i]) break;
      idx[i] = 0;
    }
  }
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  AO_CHECK(device().is_cpu(), "contiguous() of a strided tensor on {} is not supported",
           device().str());
  Tensor out = empty(shape_, dtype_);
  gather_strided(*this, static_cast<uint8_t*>(out.data_ptr()));
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  AO_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_,
           "copy_from: source {} does not match destination {}", src.str(), str());
  AO_CHECK(is_contiguous(), "copy_from into a non-contiguous tensor is not supported");
  if (src.is_contiguous()) {
    copy_bytes(data_ptr(), device(), src.data_ptr(), src.device(), nbytes());
    return;
  }
  Tensor c = src.to(Device::cpu()).contiguous();
  copy_bytes(data_ptr(), device(), c.data_ptr(), Device::cpu(), nbytes());
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  AO_CHECK(device().is_cpu(), "dtype conversion on {} is not supported; move to cpu first",
           device().str());
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype);
  convert_buffer(src.data_ptr(), dtype_, out.data_ptr(), dtype, numel());
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor src = this->device().is_cpu() ? contiguous() : *this;
  AO_CHECK(src.is_contiguous(), "moving a strided tensor off {} is not supported",
           this->device().str());
  Tensor out = empty(shape_, dtype_, device);
  copy_bytes(out.data_ptr(), device, src.data_ptr(), src.device(), nbytes());
  return out;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor(" + std::string(dtype_name(dtype_)) + ", " + shape_str(shape_) + ", " +
         device().str() + ")";
}

}  // namespace ao

// QTensor: a Linear weight stored in a quantized format — TorchAO's tensor-subclass idea.
// Each concrete type (quantized_tensors.h) declares its named data tensors (qdata, scale,
// zero_point, ...) and its attributes (TorchAO's `_data` JSON: block size, dtypes,
// activation-quantization settings). Serialization, printing and the linear driver are
// generic and derived from those two lists; a type only brings its numerics.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "ao/core/tensor.h"
#include "ao/io/safetensors.h"
#include "ao/quant/linear_weight.h"

namespace ao::quant {

class QTensor : public LinearWeight {
 public:
  // `shape` is the logical weight shape [N, K]; `data` the named data tensors in TorchAO's
  // declaration order (absent optional ones left out); `attributes` TorchAO's `_data`.
  QTensor(std::string type, Shape shape, std::vector<io::NamedTensor> data,
          nlohmann::ordered_json attributes);

  std::string type_name() const override { return type_; }
  int64_t out_features() const override { return shape_[0]; }
  int64_t in_features() const override { return shape_[1]; }
  size_t nbytes() const override;
  void linear(const float* x, int64_t M, float* y) const override;
  Tensor dequantize() const override;

  const Shape& shape() const { return shape_; }
  const std::vector<io::NamedTensor>& data() const { return data_; }
  const Tensor& data(std::string_view name) const;  // throws if the type has no such tensor
  bool has_data(std::string_view name) const;
  const nlohmann::ordered_json& attributes() const { return attributes_; }
  // The per-weight safetensors metadata entry: {"_type", "_data", "_tensor_data_names"}.
  nlohmann::ordered_json metadata() const;
  // "Int8Tensor(shape=[64, 172], qdata=i8[64, 172], scale=f32[64, 1], block_size=[1, 172], ...)"
  std::string str() const;
  // Bits per weight element including scales and zero points.
  double bits_per_weight() const {
    return 8.0 * static_cast<double>(nbytes()) / static_cast<double>(shape_[0] * shape_[1]);
  }

  // ---- what a concrete type implements ------------------------------------------------
  // Rows [n0, n1) of the dequantized weight into out [(n1 - n0), K] (f32).
  virtual void dequantize_rows(int64_t n0, int64_t n1, float* out) const = 0;
  // Dynamic activation quantization (quantize-dequantize of x [M, K] in place) as TorchAO
  // does it for this weight's settings; weight-only types leave x alone.
  virtual void quantize_activation(float* /*x*/, int64_t /*M*/) const {}
  virtual bool quantizes_activation() const { return false; }
  // Decode (M <= 8) with integer activations: dynamic quantization of x and an integer GEMV,
  // for types whose TorchAO linear computes in integers. Returns false when the type has no
  // such path (the driver then quantize-dequantizes x and uses gemv_rows).
  virtual bool linear_integer(const float* /*x*/, int64_t /*M*/, float* /*y*/) const {
    return false;
  }
  // Fused dequantize-dot for decode: y[m * ldy + n] for rows [n0, n1) and all m < M.
  // Returns false when the type has no fused path (the driver then dequantizes a tile).
  virtual bool gemv_rows(const float* /*x*/, int64_t /*M*/, int64_t /*n0*/, int64_t /*n1*/,
                         float* /*y*/, int64_t /*ldy*/) const {
    return false;
  }

 protected:
  std::string type_;
  Shape shape_;
  std::vector<io::NamedTensor> data_;
  nlohmann::ordered_json attributes_;
};

using QTensorPtr = std::shared_ptr<const QTensor>;

// One row per quantized tensor type (ggml's type_traits idea): its TorchAO name, the data
// names it requires and may carry, and how to rebuild it from a checkpoint (validating that
// the tensors agree with the attributes).
struct QTensorTypeInfo {
  const char* name;
  std::vector<std::string> required_data;
  std::vector<std::string> optional_data;
  std::function<QTensorPtr(const std::string& where, std::vector<io::NamedTensor> data,
                           const nlohmann::ordered_json& attributes)>
      load;
};
const std::vector<QTensorTypeInfo>& qtensor_types();
const QTensorTypeInfo* find_qtensor_type(std::string_view name);  // nullptr when unknown

}  // namespace ao::quant

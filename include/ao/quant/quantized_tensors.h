// The quantized tensor types, named and laid out as TorchAO 0.18's tensor subclasses so
// their checkpoints interoperate:
//   Int8Tensor                (int8 weight, per-row / per-group; optional int8 dynamic activations)
//   Int4Tensor                (plain int4: packed [N, K/2], scale and zero_point [K/g, N])
//   Int4TilePackedTo4dTensor  (tinygemm: int32 [N/8, K/(8*16), 32, 4] tiles, bf16 scale_and_zero)
//   IntxUnpackedToInt8Tensor  (int1..int8 held in int8; optional int8 asymmetric per-token
//   activations) Float8Tensor              (e4m3 weight, per-row / per-tensor; optional fp8 dynamic
//   activations) MXTensor                  (MXFP8 / MXFP6 / MXFP4, block 32, E8M0 scales, swizzled)
//   NVFP4Tensor               (fp4 e2m1, block 16, e4m3 scales swizzled, per-tensor fp32 scale)
// Each has `from_float` (quantize an f32 [N, K] weight exactly as TorchAO does) and is rebuilt
// from a checkpoint through qtensor_types().
#pragma once

#include <optional>

#include "ao/quant/qtensor.h"

namespace ao::quant {

enum class ActivationQuant {
  none,
  int8_symmetric_per_token,   // Int8DynamicActivationInt8WeightConfig
  int8_asymmetric_per_token,  // Int8DynamicActivationIntxWeightConfig ("8da")
  float8_per_row,             // Float8DynamicActivationFloat8WeightConfig(PerRow())
  float8_per_tensor,          // Float8DynamicActivationFloat8WeightConfig(PerTensor())
  mx,                         // MXDynamicActivationMXWeightConfig: same element type as the weight
  nvfp4,                      // NVFP4DynamicActivationNVFP4WeightConfig (dynamic per-tensor scale)
};

// Weights whose qdata is one int8 per element with per-(row, group) scale and zero point:
// Int8Tensor and IntxUnpackedToInt8Tensor share storage, kernels and dequantization.
class AffineInt8Tensor : public QTensor {
 public:
  AffineInt8Tensor(std::string type, Tensor qdata, Tensor scale, Tensor zero_point,
                   int64_t group_size, ActivationQuant act, nlohmann::ordered_json attributes);
  int64_t group_size() const { return group_size_; }
  ActivationQuant activation_quant() const { return act_; }
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  void quantize_activation(float* x, int64_t M) const override;
  bool quantizes_activation() const override { return act_ != ActivationQuant::none; }
  bool gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1, float* y,
                 int64_t ldy) const override;
  // int8 x int8: per-token int8 activations, int32 dot products per group, then the scales.
  bool linear_integer(const float* x, int64_t M, float* y) const override;

 protected:
  int64_t group_size_;
  ActivationQuant act_;
};

class Int8Tensor : public AffineInt8Tensor {
 public:
  using AffineInt8Tensor::AffineInt8Tensor;
  // group_size 0 = per row. act: none or int8_symmetric_per_token.
  static std::shared_ptr<Int8Tensor> from_float(const Tensor& w, int64_t group_size,
                                                ActivationQuant act);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
};

class IntxUnpackedToInt8Tensor : public AffineInt8Tensor {
 public:
  using AffineInt8Tensor::AffineInt8Tensor;
  // bits 1..8; group_size 0 = per row; act: none or int8_asymmetric_per_token.
  static std::shared_ptr<IntxUnpackedToInt8Tensor> from_float(const Tensor& w, int bits,
                                                              int64_t group_size, bool symmetric,
                                                              ActivationQuant act);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
};

// scale and zero_point are stored in TorchAO's dtype (from_hp: the weight's dtype, so bf16 for
// a bf16 model; f32, bf16 or f16 from a checkpoint) and serialized as stored; the kernels read
// f32 copies made once here (the data tensors themselves when already f32).
class Int4Tensor : public QTensor {
 public:
  // scale and zero_point: f32, bf16 or f16.
  Int4Tensor(Tensor qdata, Tensor scale, Tensor zero_point, int64_t group_size, Shape shape);
  // scale and zero_point in w's dtype when it is bf16 or f16, else f32 (TorchAO's from_hp).
  static std::shared_ptr<Int4Tensor> from_float(const Tensor& w, int64_t group_size);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
  int64_t group_size() const { return group_size_; }
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  bool gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1, float* y,
                 int64_t ldy) const override;

 private:
  int64_t group_size_;
  Tensor scale_f32_, zero_f32_;  // compute copies of scale / zero_point (not counted in nbytes)
};

// How Int4WeightOnlyConfig chooses the int4 qparams (TorchAO's Int4ChooseQParamsAlgorithm).
enum class Int4QparamsAlgorithm {
  tinygemm,  // min/max per group (_choose_qparams_affine_tinygemm)
  hqq,       // half-quadratic optimizer (ao/formats/hqq.h), as from_hp runs it on CUDA (fp16)
};
const char* int4_qparams_algorithm_name(Int4QparamsAlgorithm a);  // "tinygemm", "hqq"

// TorchAO's tinygemm layout (what aten._convert_weight_to_int4pack produces on CUDA, with
// inner_k_tiles 8; ao/formats/int4_tile_pack.h): N padded to a multiple of 8, K to a multiple
// of 1024; scale_and_zero [K/g, N, 2] in bf16; w = (u - 8) * scale + zero with u in [0, 15].
// Quantization follows TorchAO's bf16 arithmetic on CUDA (each op rounded to bf16). Kept
// unpacked in memory too, so linear() shares the plain int4 kernel.
class Int4TilePackedTo4dTensor : public QTensor {
 public:
  Int4TilePackedTo4dTensor(Tensor qdata, Tensor scale_and_zero, int64_t group_size, Shape shape);
  // TorchAO's from_hp: the weight rounded to bf16, zero-padded to K % 1024 == 0 and N % 8 == 0,
  // qparams by `algorithm` on the padded weight, packed with inner_k_tiles 8.
  static std::shared_ptr<Int4TilePackedTo4dTensor> from_float(
      const Tensor& w, int64_t group_size,
      Int4QparamsAlgorithm algorithm = Int4QparamsAlgorithm::tinygemm);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  bool gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1, float* y,
                 int64_t ldy) const override;

 private:
  int64_t group_size_;
  Tensor plain_q_, plain_scale_, plain_zero_;  // Int4Tensor layout of the first N rows / K columns
};

class Float8Tensor : public QTensor {
 public:
  Float8Tensor(Tensor qdata, Tensor scale, bool per_tensor, ActivationQuant act,
               nlohmann::ordered_json attributes);
  // per_tensor false = per row. act: none, float8_per_row or float8_per_tensor.
  static std::shared_ptr<Float8Tensor> from_float(const Tensor& w, bool per_tensor,
                                                  ActivationQuant act);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  void quantize_activation(float* x, int64_t M) const override;
  bool quantizes_activation() const override { return act_ != ActivationQuant::none; }
  ActivationQuant activation_quant() const { return act_; }

 private:
  bool per_tensor_;
  ActivationQuant act_;
};

enum class MxElement { fp8_e4m3, fp8_e5m2, fp6_e2m3, fp6_e3m2, fp4_e2m1 };
const char* mx_element_torch_name(MxElement e);  // "float8_e4m3fn", "float4_e2m1fn_x2", ...

class MXTensor : public QTensor {
 public:
  MXTensor(Tensor qdata, Tensor scale, MxElement elem, bool rceil, bool dynamic_activation,
           Shape shape, nlohmann::ordered_json attributes);
  // K must be a multiple of 32. Scales are written swizzled (is_swizzled_scales: true).
  static std::shared_ptr<MXTensor> from_float(const Tensor& w, MxElement elem,
                                              bool dynamic_activation);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  void quantize_activation(float* x, int64_t M) const override;
  bool quantizes_activation() const override { return dynamic_activation_; }

 private:
  MxElement elem_;
  bool rceil_;
  bool dynamic_activation_;
  bool swizzled_;
};

class NVFP4Tensor : public QTensor {
 public:
  NVFP4Tensor(Tensor qdata, Tensor scale, std::optional<Tensor> per_tensor_scale,
              bool dynamic_activation, Shape shape, nlohmann::ordered_json attributes);
  // K must be a multiple of 16. Scales are written swizzled; per-tensor scale amax / (448 * 6).
  static std::shared_ptr<NVFP4Tensor> from_float(const Tensor& w, bool dynamic_activation);
  static QTensorPtr load(const std::string& where, std::vector<io::NamedTensor> data,
                         const nlohmann::ordered_json& attributes);
  void dequantize_rows(int64_t n0, int64_t n1, float* out) const override;
  void quantize_activation(float* x, int64_t M) const override;
  bool quantizes_activation() const override { return dynamic_activation_; }

 private:
  bool dynamic_activation_;
  bool swizzled_;
};

}  // namespace ao::quant

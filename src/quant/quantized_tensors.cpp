#include "ao/quant/quantized_tensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/formats/hqq.h"
#include "ao/formats/int4_tile_pack.h"
#include "kernels/cpu/quant_kernels.h"
#include "quant/quant_numerics.h"

namespace ao::quant {
namespace {

using json = nlohmann::ordered_json;
using namespace detail;
namespace kq = ao::kernels::cpu::quant;

json torch_dtype(const std::string& name) {
  return json{{"_type", "torch.dtype"}, {"_data", name}};
}
json typed(const std::string& type, json data) {
  return json{{"_type", type}, {"_data", std::move(data)}};
}
json per_row() { return typed("PerRow", json{{"dim", -1}}); }

float bf16r(float x) { return bf16_to_f32(f32_to_bf16(x)); }

Tensor f32_contiguous(const Tensor& t) {
  return t.dtype() == DType::f32 ? t.contiguous() : t.contiguous().to(DType::f32);
}

void check_weight(const Tensor& w, const char* type) {
  AO_CHECK(w.dim() == 2, "{}: expected a 2-D weight [N, K], got {}", type, shape_str(w.shape()));
  AO_CHECK(dtype_info(w.dtype()).is_float && !dtype_info(w.dtype()).is_packed &&
               w.dtype() != DType::e8m0,
           "{}: expected a floating-point weight, got {}", type, dtype_name(w.dtype()));
}

// Named data tensors of a checkpoint entry, with helpers that name the weight in errors.
struct DataMap {
  std::string where;
  std::map<std::string, Tensor> t;
  DataMap(std::string w, const std::vector<io::NamedTensor>& data) : where(std::move(w)) {
    for (const auto& d : data) t[d.name] = d.tensor;
  }
  const Tensor& get(const std::string& name) const {
    auto it = t.find(name);
    AO_CHECK(it != t.end(), "{}: missing data tensor '{}'", where, name);
    return it->second;
  }
  bool has(const std::string& name) const { return t.count(name) != 0; }
  void expect_shape(const std::string& name, const Shape& s) const {
    AO_CHECK(get(name).shape() == s, "{}: tensor '{}' has shape {} but the metadata implies {}",
             where, name, shape_str(get(name).shape()), shape_str(s));
  }
  void expect_dtype(const std::string& name, DType d) const {
    AO_CHECK(get(name).dtype() == d, "{}: tensor '{}' has dtype {}, expected {}", where, name,
             dtype_name(get(name).dtype()), dtype_name(d));
  }
};

const json& attr(const std::string& where, const json& a, const char* key) {
  AO_CHECK(a.is_object() && a.contains(key), "{}: metadata '_data' has no '{}'", where, key);
  return a[key];
}

// block_size [1, g] with g dividing K; returns g.
int64_t row_block(const std::string& where, const json& a, int64_t K) {
  const json& bs = attr(where, a, "block_size");
  AO_CHECK(bs.is_array() && bs.size() == 2 && bs[0].is_number_integer() &&
               bs[1].is_number_integer() && bs[0].get<int64_t>() == 1,
           "{}: block_size {} is not supported (expected [1, group])", where, bs.dump());
  const int64_t g = bs[1].get<int64_t>();
  AO_CHECK(g > 0 && K % g == 0, "{}: block_size {} does not divide the weight's K = {}", where,
           bs.dump(), K);
  return g;
}

std::string torch_name_of(const json& v) {
  if (v.is_object() && v.contains("_data") && v["_data"].is_string())
    return v["_data"].get<std::string>();
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Plain int4 (two signed nibbles per byte, low first; scale/zero [K / g, N]), the layout of
// Int4Tensor and of Int4TilePackedTo4dTensor's unpacked copy.
kq::Int4PlainWeight plain_int4(const Tensor& q, const Tensor& scale, const Tensor& zero,
                               const Shape& shape, int64_t group) {
  return kq::Int4PlainWeight{reinterpret_cast<const uint8_t*>(q.data<int8_t>()),
                             scale.data<float>(),
                             zero.data<float>(),
                             shape[0],
                             shape[1],
                             group};
}
void dequantize_plain_int4(const kq::Int4PlainWeight& w, int64_t n0, int64_t n1, float* out) {
  const int64_t N = w.N, K = w.K;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const uint8_t byte = w.q[n * (K / 2) + k / 2];
      const int v = (((k % 2 == 0) ? (byte & 0xF) : (byte >> 4)) ^ 8) - 8;
      const int64_t gi = k / w.group;
      out[(n - n0) * K + k] = static_cast<float>(v) * w.scale[gi * N + n] + w.zero[gi * N + n];
    }
}

}  // namespace

// ---- int8-per-element affine weights ------------------------------------------------------

namespace {
// The data tensors of an int8 affine tensor in TorchAO's order for its type. (A function, not a
// ternary of two braced vectors in the constructor's initializer: GCC 12 warned there of a string
// "maybe used uninitialized" inside the inlined initializer lists.)
std::vector<io::NamedTensor> affine_int8_parts(const std::string& type, const Tensor& qdata,
                                               const Tensor& scale, const Tensor& zero_point) {
  std::vector<io::NamedTensor> parts;
  if (type == "Int8Tensor") parts.push_back({"zero_point", zero_point});
  parts.push_back({"qdata", qdata});
  parts.push_back({"scale", scale});
  if (type != "Int8Tensor") parts.push_back({"zero_point", zero_point});
  return parts;
}
}  // namespace

AffineInt8Tensor::AffineInt8Tensor(std::string type, Tensor qdata, Tensor scale, Tensor zero_point,
                                   int64_t group_size, ActivationQuant act, json attributes)
    : QTensor(type, qdata.shape(), affine_int8_parts(type, qdata, scale, zero_point),
              std::move(attributes)),
      group_size_(group_size),
      act_(act) {}

void AffineInt8Tensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  const int64_t K = shape_[1], groups = K / group_size_;
  const int8_t* q = data("qdata").data<int8_t>();
  const float* s = data("scale").data<float>();
  const int8_t* zp = data("zero_point").data<int8_t>();
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      const float sc = s[n * groups + g];
      const int32_t z = zp[n * groups + g];
      for (int64_t k = g * group_size_; k < (g + 1) * group_size_; ++k)
        out[(n - n0) * K + k] = static_cast<float>(q[n * K + k] - z) * sc;
    }
}

void AffineInt8Tensor::quantize_activation(float* x, int64_t M) const {
  if (act_ == ActivationQuant::int8_symmetric_per_token)
    fake_quantize_int8_per_token(x, M, shape_[1], Mapping::symmetric);
  if (act_ == ActivationQuant::int8_asymmetric_per_token)
    fake_quantize_int8_per_token(x, M, shape_[1], Mapping::asymmetric);
}

bool AffineInt8Tensor::gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1, float* y,
                                 int64_t ldy) const {
  kq::AffineInt8Weight w{data("qdata").data<int8_t>(), data("scale").data<float>(),
                         data("zero_point").data<int8_t>(), shape_[1], group_size_};
  kq::gemv_affine_int8(w, x, M, n0, n1, y, ldy);
  return true;
}

bool AffineInt8Tensor::linear_integer(const float* x, int64_t M, float* y) const {
  if (act_ == ActivationQuant::none || !kq::int8_int8_exact_group(group_size_)) return false;
  const int64_t N = shape_[0], K = shape_[1];
  std::vector<int16_t> xq(static_cast<size_t>(M * K));
  std::vector<float> xs(static_cast<size_t>(M));
  quantize_int8_per_token(
      x, M, K,
      act_ == ActivationQuant::int8_symmetric_per_token ? Mapping::symmetric : Mapping::asymmetric,
      xq.data(), xs.data());
  const kq::AffineInt8Weight w{data("qdata").data<int8_t>(), data("scale").data<float>(),
                               data("zero_point").data<int8_t>(), K, group_size_};
  parallel_for(0, N, std::max<int64_t>(16, 65536 / std::max<int64_t>(K * M, 1)),
               [&](int64_t b, int64_t e) {
                 kq::gemm_int8_int8(w, xq.data(), xs.data(), M, b, e, y + b, N);
               });
  return true;
}

namespace {

// Quantizes w [N, K] per (row, group) into int8 storage with range [qmin, qmax].
void quantize_rows_affine(const Tensor& w, int64_t g, Mapping mapping, int qmin, int qmax,
                          float eps, Tensor& q, Tensor& scale, Tensor& zp) {
  const int64_t N = w.size(0), K = w.size(1), groups = K / g;
  q = Tensor::empty({N, K}, DType::i8);
  scale = Tensor::empty({N, groups}, DType::f32);
  zp = Tensor::empty({N, groups}, DType::i8);
  const float* src = w.data<float>();
  int8_t* qd = q.data<int8_t>();
  float* sd = scale.data<float>();
  int8_t* zd = zp.data<int8_t>();
  parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t gi = 0; gi < groups; ++gi) {
        const float* blk = src + n * K + gi * g;
        const AffineParams p = choose_affine_params(blk, g, mapping, qmin, qmax, eps);
        const float inv = 1.0f / p.scale;
        sd[n * groups + gi] = p.scale;
        zd[n * groups + gi] = static_cast<int8_t>(p.zero_point);
        for (int64_t k = 0; k < g; ++k)
          qd[n * K + gi * g + k] =
              static_cast<int8_t>(quantize_affine_value(blk[k], inv, p.zero_point, qmin, qmax));
      }
  });
}

}  // namespace

std::shared_ptr<Int8Tensor> Int8Tensor::from_float(const Tensor& w_in, int64_t group_size,
                                                   ActivationQuant act) {
  check_weight(w_in, "Int8Tensor");
  AO_CHECK(act == ActivationQuant::none || act == ActivationQuant::int8_symmetric_per_token,
           "Int8Tensor: activation quantization must be none or int8 symmetric per token");
  const Tensor w = f32_contiguous(w_in);
  const int64_t K = w.size(1), g = group_size > 0 ? group_size : K;
  AO_CHECK(K % g == 0, "Int8Tensor: group size {} does not divide K = {}", g, K);
  Tensor q, s, z;
  quantize_rows_affine(w, g, Mapping::symmetric, -128, 127, kF32Eps, q, s, z);
  json a;
  a["act_quant_kwargs"] = act == ActivationQuant::none
                              ? json(nullptr)
                              : typed("QuantizeTensorToInt8Kwargs",
                                      json{{"granularity", per_row()},
                                           {"mapping_type", typed("MappingType", "SYMMETRIC")},
                                           {"reduce_range", false}});
  a["reduce_range"] = false;
  a["block_size"] = json::array({1, g});
  a["dtype"] = torch_dtype("float32");
  return std::make_shared<Int8Tensor>("Int8Tensor", q, s, z, g, act, std::move(a));
}

QTensorPtr Int8Tensor::load(const std::string& where, std::vector<io::NamedTensor> data,
                            const json& a) {
  DataMap d(where, data);
  for (const char* unsupported : {"act_quant_scale", "act_quant_zero_point", "act_pre_scale"})
    if (d.has(unsupported))
      throw NotSupported(fmt::format("{}: Int8Tensor with '{}' (static or AWQ-style quantization)",
                                     where, unsupported));
  d.expect_dtype("qdata", DType::i8);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 2, "{}: qdata must be 2-D, got {}", where, shape_str(q.shape()));
  const int64_t N = q.size(0), K = q.size(1), g = row_block(where, a, K);
  d.expect_shape("scale", {N, K / g});
  Tensor zp = d.has("zero_point") ? d.get("zero_point") : Tensor::zeros({N, K / g}, DType::i8);
  AO_CHECK(zp.shape() == Shape({N, K / g}),
           "{}: tensor 'zero_point' has shape {} but the metadata implies {}", where,
           shape_str(zp.shape()), shape_str({N, K / g}));
  ActivationQuant act = ActivationQuant::none;
  if (a.contains("act_quant_kwargs") && !a["act_quant_kwargs"].is_null()) {
    const json& k = a["act_quant_kwargs"];
    const json& kd = attr(where, k, "_data");
    const std::string gran =
        kd.contains("granularity") ? torch_name_of(kd["granularity"]["_type"]) : "";
    const std::string map =
        kd.contains("mapping_type") ? torch_name_of(kd["mapping_type"]) : "SYMMETRIC";
    if (gran != "PerRow" || map != "SYMMETRIC")
      throw NotSupported(fmt::format("{}: Int8Tensor activation quantization {}", where, k.dump()));
    act = ActivationQuant::int8_symmetric_per_token;
  }
  if (a.contains("reduce_range") && a["reduce_range"].is_boolean() && a["reduce_range"].get<bool>())
    throw NotSupported(fmt::format("{}: Int8Tensor with reduce_range", where));
  return std::make_shared<Int8Tensor>("Int8Tensor", q.contiguous(), f32_contiguous(d.get("scale")),
                                      zp.contiguous().to(DType::i8), g, act, a);
}

std::shared_ptr<IntxUnpackedToInt8Tensor> IntxUnpackedToInt8Tensor::from_float(
    const Tensor& w_in, int bits, int64_t group_size, bool symmetric, ActivationQuant act) {
  check_weight(w_in, "IntxUnpackedToInt8Tensor");
  AO_CHECK(bits >= 1 && bits <= 8, "IntxUnpackedToInt8Tensor: bits must be 1..8, got {}", bits);
  AO_CHECK(act == ActivationQuant::none || act == ActivationQuant::int8_asymmetric_per_token,
           "IntxUnpackedToInt8Tensor: activation quantization must be none or int8 asymmetric per "
           "token");
  const Tensor w = f32_contiguous(w_in);
  const int64_t K = w.size(1), g = group_size > 0 ? group_size : K;
  AO_CHECK(K % g == 0, "IntxUnpackedToInt8Tensor: group size {} does not divide K = {}", g, K);
  const int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  Tensor q, s, z;
  quantize_rows_affine(w, g, symmetric ? Mapping::symmetric : Mapping::asymmetric, qmin, qmax,
                       kF32SmallestNormal, q, s, z);
  json a;
  a["target_dtype"] = torch_dtype("int" + std::to_string(bits));
  a["block_size"] = json::array({1, g});
  a["dtype"] = torch_dtype("float32");
  a["activation_quantization"] =
      act == ActivationQuant::none ? json(nullptr) : json("int8_asym_per_token");
  return std::make_shared<IntxUnpackedToInt8Tensor>("IntxUnpackedToInt8Tensor", q, s, z, g, act,
                                                    std::move(a));
}

QTensorPtr IntxUnpackedToInt8Tensor::load(const std::string& where,
                                          std::vector<io::NamedTensor> data, const json& a) {
  DataMap d(where, data);
  d.expect_dtype("qdata", DType::i8);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 2, "{}: qdata must be 2-D, got {}", where, shape_str(q.shape()));
  const int64_t N = q.size(0), K = q.size(1), g = row_block(where, a, K);
  d.expect_shape("scale", {N, K / g});
  d.expect_shape("zero_point", {N, K / g});
  const std::string target = torch_name_of(attr(where, a, "target_dtype"));
  AO_CHECK(target.size() == 4 && target.starts_with("int") && target[3] >= '1' && target[3] <= '8',
           "{}: target_dtype '{}' is not int1..int8", where, target);
  const int bits = target[3] - '0';
  const int8_t* qd = q.contiguous().data<int8_t>();
  for (int64_t i = 0; i < q.numel(); ++i)
    AO_CHECK(qd[i] >= -(1 << (bits - 1)) && qd[i] <= (1 << (bits - 1)) - 1,
             "{}: qdata value {} at {} is outside the range of {}", where, int(qd[i]), i, target);
  ActivationQuant act = ActivationQuant::none;
  const json& aq = attr(where, a, "activation_quantization");
  if (!aq.is_null()) {
    std::string v = torch_name_of(aq);
    std::transform(v.begin(), v.end(), v.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    AO_CHECK(v == "int8_asym_per_token", "{}: activation_quantization {} is not supported", where,
             aq.dump());
    act = ActivationQuant::int8_asymmetric_per_token;
  }
  Tensor zp = d.get("zero_point");
  if (zp.dtype() != DType::i8) zp = f32_contiguous(zp).to(DType::i8);
  return std::make_shared<IntxUnpackedToInt8Tensor>("IntxUnpackedToInt8Tensor", q.contiguous(),
                                                    f32_contiguous(d.get("scale")), zp.contiguous(),
                                                    g, act, a);
}

// ---- Int4Tensor (plain) -------------------------------------------------------------------

namespace {
bool int4_qparam_dtype(DType d) { return d == DType::f32 || d == DType::bf16 || d == DType::f16; }
}  // namespace

Int4Tensor::Int4Tensor(Tensor qdata, Tensor scale, Tensor zero_point, int64_t group_size,
                       Shape shape)
    : QTensor("Int4Tensor", shape, {{"qdata", qdata}, {"scale", scale}, {"zero_point", zero_point}},
              json{{"activation_dtype", torch_dtype("bfloat16")},
                   {"block_size", json::array({1, group_size})},
                   {"shape", shape}}),
      group_size_(group_size) {
  for (const char* name : {"scale", "zero_point"})
    AO_CHECK(int4_qparam_dtype(data(name).dtype()),
             "Int4Tensor: tensor '{}' has dtype {}, expected f32, bf16 or f16", name,
             dtype_name(data(name).dtype()));
  // The kernels read f32: a copy for bf16/f16 data, the data tensor itself when it is f32.
  scale_f32_ = f32_contiguous(data("scale"));
  zero_f32_ = f32_contiguous(data("zero_point"));
}

std::shared_ptr<Int4Tensor> Int4Tensor::from_float(const Tensor& w_in, int64_t group_size) {
  check_weight(w_in, "Int4Tensor");
  const Tensor w = f32_contiguous(w_in);
  const int64_t N = w.size(0), K = w.size(1), g = group_size;
  AO_CHECK(g > 0 && g % 2 == 0 && K % g == 0,
           "Int4Tensor: group size {} must be even and divide K = {}", g, K);
  const int64_t groups = K / g;
  Tensor q = Tensor::empty({N, K / 2}, DType::i8);
  std::vector<float> s32(static_cast<size_t>(groups * N)), z32(s32.size());
  const float* src = w.data<float>();
  auto* qd = reinterpret_cast<uint8_t*>(q.data<int8_t>());
  parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    std::vector<int> vals(static_cast<size_t>(g));
    for (int64_t n = b; n < e; ++n)
      for (int64_t gi = 0; gi < groups; ++gi) {
        const float* blk = src + n * K + gi * g;
        const float mx = *std::max_element(blk, blk + g), mn = *std::min_element(blk, blk + g);
        const float s = std::max(mx - mn, 1e-6f) / 15.0f;
        // q from the fp32 s and min; s and zero are then stored in the weight's dtype (below).
        s32[gi * N + n] = s;
        z32[gi * N + n] = mn + s * 8.0f;
        for (int64_t k = 0; k < g; ++k)
          vals[k] =
              static_cast<int>(std::clamp(std::nearbyint((blk[k] - mn) / s), 0.0f, 15.0f)) - 8;
        for (int64_t k = 0; k < g; k += 2)
          qd[n * (K / 2) + (gi * g + k) / 2] =
              static_cast<uint8_t>((vals[k] & 0xF) | ((vals[k + 1] & 0xF) << 4));
      }
  });
  // TorchAO's Int4Tensor.from_hp: scale.to(w.dtype), zero_point.to(w.dtype) — bf16 / f16
  // tensors for such weights (rounded to nearest even), f32 otherwise.
  const DType wdt = w_in.dtype();
  const DType qp_dtype = wdt == DType::bf16 || wdt == DType::f16 ? wdt : DType::f32;
  auto stored = [&](const std::vector<float>& v) {
    Tensor t = Tensor::empty({groups, N}, qp_dtype);
    for (size_t i = 0; i < v.size(); ++i) {
      if (qp_dtype == DType::bf16)
        t.data<uint16_t>()[i] = f32_to_bf16(v[i]);
      else if (qp_dtype == DType::f16)
        t.data<uint16_t>()[i] = f32_to_f16(v[i]);
      else
        t.data<float>()[i] = v[i];
    }
    return t;
  };
  return std::make_shared<Int4Tensor>(q, stored(s32), stored(z32), g, Shape{N, K});
}

QTensorPtr Int4Tensor::load(const std::string& where, std::vector<io::NamedTensor> data,
                            const json& a) {
  DataMap d(where, data);
  if (d.has("act_pre_scale"))
    throw NotSupported(fmt::format("{}: Int4Tensor with act_pre_scale (AWQ)", where));
  const json& shape = attr(where, a, "shape");
  AO_CHECK(shape.is_array() && shape.size() == 2, "{}: Int4Tensor shape {} must be [N, K]", where,
           shape.dump());
  const int64_t N = shape[0].get<int64_t>(), K = shape[1].get<int64_t>();
  const int64_t g = row_block(where, a, K);
  AO_CHECK(g % 2 == 0, "{}: Int4Tensor group size {} must be even", where, g);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dtype() == DType::i8 || q.dtype() == DType::u8,
           "{}: Int4Tensor qdata must be int8/uint8, got {}", where, dtype_name(q.dtype()));
  d.expect_shape("qdata", {N, K / 2});
  d.expect_shape("scale", {K / g, N});
  d.expect_shape("zero_point", {K / g, N});
  // scale and zero_point keep the file's dtype (TorchAO writes a bf16 model's as bf16), so a
  // loaded checkpoint saves back unchanged; the constructor makes the f32 copies for compute.
  for (const char* name : {"scale", "zero_point"})
    AO_CHECK(int4_qparam_dtype(d.get(name).dtype()),
             "{}: Int4Tensor tensor '{}' has dtype {}, expected f32, bf16 or f16", where, name,
             dtype_name(d.get(name).dtype()));
  Tensor qc = q.contiguous();
  if (qc.dtype() != DType::i8)
    qc = Tensor::from_blob(qc.data_ptr(), qc.shape(), DType::i8, qc.storage());
  return std::make_shared<Int4Tensor>(qc, d.get("scale").contiguous(),
                                      d.get("zero_point").contiguous(), g, Shape{N, K});
}

void Int4Tensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  dequantize_plain_int4(plain_int4(data("qdata"), scale_f32_, zero_f32_, shape_, group_size_), n0,
                        n1, out);
}

bool Int4Tensor::gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1, float* y,
                           int64_t ldy) const {
  kq::gemv_int4_plain(plain_int4(data("qdata"), scale_f32_, zero_f32_, shape_, group_size_), x, M,
                      n0, n1, y, ldy);
  return true;
}

// ---- Int4TilePackedTo4dTensor (tinygemm) --------------------------------------------------
// The tile layout and the scale_and_zero interleave are ao/formats/int4_tile_pack.h (bit-exact
// with aten._convert_weight_to_int4pack on CUDA); this type owns the padding and the qparams.

namespace {


// TorchAO's _choose_qparams_affine_tinygemm + _quantize_affine_tinygemm on a CUDA bf16 tensor:
// every op rounded to bf16, and `/ 15` (a CPU scalar) computed as `* (1 / 15)` as CUDA does.
// w: [n, k] holding bf16 values; q: uint4 codes; scale, zero: [n, k/g].
void tinygemm_qparams_cuda(const float* w, int64_t n, int64_t k, int64_t g, uint8_t* q,
                           float* scale, float* zero) {
  const int64_t groups = k / g;
  const float inv15 = 1.0f / 15.0f;
  parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t gi = 0; gi < groups; ++gi) {
        const float* blk = w + r * k + gi * g;
        const float mx = *std::max_element(blk, blk + g), mn = *std::min_element(blk, blk + g);
        const float s = std::max(bf16r(bf16r(mx - mn) * inv15), kF32SmallestNormal);
        const float z = bf16r(mn + bf16r(s * 8.0f));
        scale[r * groups + gi] = s;
        zero[r * groups + gi] = z;
        const float min_val = bf16r(z - bf16r(s * 8.0f));
        for (int64_t i = 0; i < g; ++i)
          q[r * k + gi * g + i] = static_cast<uint8_t>(
              std::clamp(std::nearbyint(bf16r(bf16r(blk[i] - min_val) / s)), 0.0f, 15.0f));
      }
  });
}

constexpr int kTinygemmInnerKTiles = 8;  // what Int4TilePackedTo4dTensor.from_hp uses

}  // namespace

const char* int4_qparams_algorithm_name(Int4QparamsAlgorithm a) {
  return a == Int4QparamsAlgorithm::hqq ? "hqq" : "tinygemm";
}

Int4TilePackedTo4dTensor::Int4TilePackedTo4dTensor(Tensor qdata, Tensor scale_and_zero,
                                                   int64_t group_size, Shape shape)
    : QTensor("Int4TilePackedTo4dTensor", shape,
              {{"qdata", qdata}, {"scale_and_zero", scale_and_zero}},
              json{{"block_size", json::array({1, group_size})}, {"shape", shape}}),
      group_size_(group_size) {
  // Unpack once into the plain Int4Tensor layout (signed nibbles, element 2i low) for the first
  // N rows and K columns; groups may straddle TorchAO's K padding.
  const int64_t N = shape_[0], K = shape_[1];
  const int ikt = static_cast<int>(qdata.size(3) * 2);
  const int64_t Np = qdata.size(0) * 8, Kp = qdata.size(1) * ikt * 16;
  const int64_t padded_groups = Kp / group_size, groups = (K + group_size - 1) / group_size;
  std::vector<uint8_t> codes(static_cast<size_t>(Np * Kp));
  formats::int4_tile_unpack(qdata.data<int32_t>(), Np, Kp, ikt, codes.data());
  plain_q_ = Tensor::empty({N, K / 2}, DType::i8);
  auto* pq = reinterpret_cast<uint8_t*>(plain_q_.data<int8_t>());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; k += 2) {
      // u in [0, 15] -> q = u - 8 as a signed nibble; element k low, k + 1 high.
      const int lo = codes[n * Kp + k] - 8, hi = codes[n * Kp + k + 1] - 8;
      pq[n * (K / 2) + k / 2] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
    }
  std::vector<float> s(static_cast<size_t>(Np * padded_groups)),
      z(static_cast<size_t>(Np * padded_groups));
  formats::deinterleave_scale_and_zero_bf16(scale_and_zero.data<uint16_t>(), Np, padded_groups,
                                            s.data(), z.data());
  plain_scale_ = Tensor::empty({groups, N}, DType::f32);
  plain_zero_ = Tensor::empty({groups, N}, DType::f32);
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t n = 0; n < N; ++n) {
      plain_scale_.data<float>()[gi * N + n] = s[n * padded_groups + gi];
      plain_zero_.data<float>()[gi * N + n] = z[n * padded_groups + gi];
    }
}

std::shared_ptr<Int4TilePackedTo4dTensor> Int4TilePackedTo4dTensor::from_float(
    const Tensor& w_in, int64_t g, Int4QparamsAlgorithm algorithm) {
  check_weight(w_in, "Int4TilePackedTo4dTensor");
  AO_CHECK(g == 32 || g == 64 || g == 128 || g == 256,
           "Int4TilePackedTo4dTensor: group size must be 32, 64, 128 or 256, got {}", g);
  const Tensor w = f32_contiguous(w_in);
  const int64_t N = w.size(0), K = w.size(1), Np = (N + 7) / 8 * 8, Kp = (K + 1023) / 1024 * 1024;
  AO_CHECK(K % 2 == 0, "Int4TilePackedTo4dTensor: K = {} must be even", K);
  const int64_t groups = Kp / g;
  // TorchAO quantizes a bf16 weight, zero-padded to [Np, Kp].
  std::vector<float> wp(static_cast<size_t>(Np * Kp), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) wp[n * Kp + k] = bf16r(w.data<float>()[n * K + k]);
  std::vector<uint8_t> codes(static_cast<size_t>(Np * Kp));
  std::vector<float> scale(static_cast<size_t>(Np * groups)), zero(scale.size());
  if (algorithm == Int4QparamsAlgorithm::hqq) {
    // from_hp requires a CUDA device, where the HQQ optimizer runs in float16.
    std::vector<uint16_t> wb(wp.size());
    for (size_t i = 0; i < wp.size(); ++i) wb[i] = f32_to_bf16(wp[i]);
    formats::hqq_quantize_int4(wb.data(), DType::bf16, Np, Kp, g, codes.data(), scale.data(),
                               zero.data(), {.backend = formats::HqqBackend::cuda});
  } else {
    tinygemm_qparams_cuda(wp.data(), Np, Kp, g, codes.data(), scale.data(), zero.data());
  }
  const auto shape = formats::int4_tile_packed_shape(Np, Kp, kTinygemmInnerKTiles);
  Tensor q = Tensor::empty({shape[0], shape[1], shape[2], shape[3]}, DType::i32);
  formats::int4_tile_pack(codes.data(), Np, Kp, kTinygemmInnerKTiles, q.data<int32_t>());
  Tensor sz = Tensor::empty({groups, Np, 2}, DType::bf16);
  formats::interleave_scale_and_zero_bf16(scale.data(), zero.data(), Np, groups,
                                          sz.data<uint16_t>());
  return std::make_shared<Int4TilePackedTo4dTensor>(q, sz, g, Shape{N, K});
}

QTensorPtr Int4TilePackedTo4dTensor::load(const std::string& where,
                                          std::vector<io::NamedTensor> data, const json& a) {
  DataMap d(where, data);
  if (d.has("act_pre_scale"))
    throw NotSupported(fmt::format("{}: Int4TilePackedTo4dTensor with act_pre_scale (AWQ)", where));
  const json& shape = attr(where, a, "shape");
  AO_CHECK(shape.is_array() && shape.size() == 2, "{}: shape {} must be [N, K]", where,
           shape.dump());
  const int64_t N = shape[0].get<int64_t>(), K = shape[1].get<int64_t>();
  AO_CHECK(N > 0 && K > 0 && K % 2 == 0, "{}: shape [{}, {}] must be positive with an even K",
           where, N, K);
  const json& bs = attr(where, a, "block_size");
  AO_CHECK(bs.is_array() && bs.size() == 2 && bs[0] == 1 && bs[1].is_number_integer(),
           "{}: block_size {} is not supported (expected [1, group])", where, bs.dump());
  const int64_t g = bs[1].get<int64_t>();  // groups cover TorchAO's padded K, not K
  AO_CHECK(g == 32 || g == 64 || g == 128 || g == 256,
           "{}: tinygemm group size must be 32/64/128/256, got {}", where, g);
  d.expect_dtype("qdata", DType::i32);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 4 && q.size(2) == 32 && (q.size(3) == 1 || q.size(3) == 2 || q.size(3) == 4),
           "{}: qdata {} is not a tinygemm [N/8, K/(inner_k_tiles*16), 32, inner_k_tiles/2] tensor",
           where, shape_str(q.shape()));
  const int64_t Np = q.size(0) * 8, Kp = q.size(1) * q.size(3) * 2 * 16;
  AO_CHECK(Np >= N && Np < N + 8 && Kp >= K, "{}: qdata {} does not hold a [{}, {}] weight", where,
           shape_str(q.shape()), N, K);
  AO_CHECK(Kp % g == 0, "{}: padded K = {} is not a multiple of the group size {}", where, Kp, g);
  Tensor sz = d.get("scale_and_zero");
  AO_CHECK(sz.dtype() == DType::bf16 || sz.dtype() == DType::f32 || sz.dtype() == DType::f16,
           "{}: scale_and_zero must be bf16/f16/f32, got {}", where, dtype_name(sz.dtype()));
  d.expect_shape("scale_and_zero", {Kp / g, Np, 2});
  if (sz.dtype() != DType::bf16) sz = sz.contiguous().to(DType::bf16);
  return std::make_shared<Int4TilePackedTo4dTensor>(q.contiguous(), sz.contiguous(), g,
                                                    Shape{N, K});
}

void Int4TilePackedTo4dTensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  dequantize_plain_int4(plain_int4(plain_q_, plain_scale_, plain_zero_, shape_, group_size_), n0,
                        n1, out);
}

bool Int4TilePackedTo4dTensor::gemv_rows(const float* x, int64_t M, int64_t n0, int64_t n1,
                                         float* y, int64_t ldy) const {
  kq::gemv_int4_plain(plain_int4(plain_q_, plain_scale_, plain_zero_, shape_, group_size_), x, M,
                      n0, n1, y, ldy);
  return true;
}

// ---- Float8Tensor -------------------------------------------------------------------------

namespace {

// scale = amax / 448 per block; q = e4m3(clamp(x / scale)). A block of zeros gets scale 0
// and q = 0 (TorchAO would produce 0/0 = NaN there; we define it as zero).
void quantize_float8_block(const float* x, int64_t n, uint8_t* q, float* scale_out) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / kE4M3.max;
  *scale_out = scale;
  for (int64_t i = 0; i < n; ++i) {
    if (scale == 0.0f) {
      q[i] = std::signbit(x[i]) ? 0x80 : 0;
      continue;
    }
    q[i] = encode_minifloat(std::clamp(x[i] / scale, -kE4M3.max, kE4M3.max), kE4M3);
  }
}

json float8_act_kwargs(bool per_tensor) {
  return typed("QuantizeTensorToFloat8Kwargs",
               json{{"float8_dtype", torch_dtype("float8_e4m3fn")},
                    {"granularity", per_tensor ? typed("PerTensor", json::object()) : per_row()},
                    {"mm_config", typed("Float8MMConfig", json{{"emulate", false},
                                                               {"use_fast_accum", true},
                                                               {"pad_inner_dim", false}})},
                    {"hp_value_lb", nullptr},
                    {"hp_value_ub", nullptr},
                    {"kernel_preference", typed("KernelPreference", "AUTO")}});
}

}  // namespace

Float8Tensor::Float8Tensor(Tensor qdata, Tensor scale, bool per_tensor, ActivationQuant act,
                           json attributes)
    : QTensor("Float8Tensor", qdata.shape(), {{"qdata", qdata}, {"scale", scale}},
              std::move(attributes)),
      per_tensor_(per_tensor),
      act_(act) {}

std::shared_ptr<Float8Tensor> Float8Tensor::from_float(const Tensor& w_in, bool per_tensor,
                                                       ActivationQuant act) {
  check_weight(w_in, "Float8Tensor");
  const Tensor w = f32_contiguous(w_in);
  const int64_t N = w.size(0), K = w.size(1);
  Tensor q = Tensor::empty({N, K}, DType::f8_e4m3fn);
  Tensor s = Tensor::empty(per_tensor ? Shape{1, 1} : Shape{N, 1}, DType::f32);
  auto* qd = q.data<uint8_t>();
  if (per_tensor) {
    quantize_float8_block(w.data<float>(), N * K, qd, s.data<float>());
  } else {
    parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        quantize_float8_block(w.data<float>() + n * K, K, qd + n * K, s.data<float>() + n);
    });
  }
  json a;
  a["block_size"] = per_tensor ? json::array({N, K}) : json::array({1, K});
  a["mm_config"] =
      act == ActivationQuant::none
          ? json(nullptr)
          : typed("Float8MMConfig",
                  json{{"emulate", false}, {"use_fast_accum", true}, {"pad_inner_dim", false}});
  a["act_quant_kwargs"] = act == ActivationQuant::none
                              ? json(nullptr)
                              : float8_act_kwargs(act == ActivationQuant::float8_per_tensor);
  a["kernel_preference"] = typed("KernelPreference", "AUTO");
  a["dtype"] = torch_dtype("float32");
  return std::make_shared<Float8Tensor>(q, s, per_tensor, act, std::move(a));
}

QTensorPtr Float8Tensor::load(const std::string& where, std::vector<io::NamedTensor> data,
                              const json& a) {
  DataMap d(where, data);
  d.expect_dtype("qdata", DType::f8_e4m3fn);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 2, "{}: qdata must be 2-D, got {}", where, shape_str(q.shape()));
  const int64_t N = q.size(0), K = q.size(1);
  const json& bs = attr(where, a, "block_size");
  bool per_tensor;
  if (bs == json::array({1, K})) {
    per_tensor = false;
    d.expect_shape("scale", {N, 1});
  } else if (bs == json::array({N, K})) {
    per_tensor = true;
    AO_CHECK(d.get("scale").numel() == 1, "{}: per-tensor Float8Tensor needs one scale, got {}",
             where, shape_str(d.get("scale").shape()));
  } else {
    throw NotSupported(fmt::format("{}: Float8Tensor block_size {} for a [{}, {}] weight", where,
                                   bs.dump(), N, K));
  }
  ActivationQuant act = ActivationQuant::none;
  if (a.contains("act_quant_kwargs") && !a["act_quant_kwargs"].is_null()) {
    const json& kd = attr(where, a["act_quant_kwargs"], "_data");
    const std::string fd =
        kd.contains("float8_dtype") ? torch_name_of(kd["float8_dtype"]) : "float8_e4m3fn";
    const std::string gran =
        kd.contains("granularity") ? torch_name_of(kd["granularity"]["_type"]) : "";
    if (fd != "float8_e4m3fn" || (gran != "PerRow" && gran != "PerTensor"))
      throw NotSupported(fmt::format("{}: Float8Tensor activation quantization {}", where,
                                     a["act_quant_kwargs"].dump()));
    act = gran == "PerRow" ? ActivationQuant::float8_per_row : ActivationQuant::float8_per_tensor;
  }
  Tensor s = f32_contiguous(d.get("scale"));
  return std::make_shared<Float8Tensor>(q.contiguous(), per_tensor ? s.view({1, 1}) : s, per_tensor,
                                        act, a);
}

void Float8Tensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  const int64_t K = shape_[1];
  const auto* q = data("qdata").data<uint8_t>();
  const float* s = data("scale").data<float>();
  const float* lut = minifloat_table(kE4M3);
  for (int64_t n = n0; n < n1; ++n) {
    const float sc = per_tensor_ ? s[0] : s[n];
    for (int64_t k = 0; k < K; ++k) out[(n - n0) * K + k] = lut[q[n * K + k]] * sc;
  }
}

void Float8Tensor::quantize_activation(float* x, int64_t M) const {
  if (act_ == ActivationQuant::none) return;
  const int64_t K = shape_[1];
  const int64_t rows = act_ == ActivationQuant::float8_per_tensor ? 1 : M,
                len = act_ == ActivationQuant::float8_per_tensor ? M * K : K;
  std::vector<uint8_t> q(static_cast<size_t>(len));
  for (int64_t r = 0; r < rows; ++r) {
    float s;
    quantize_float8_block(x + r * len, len, q.data(), &s);
    for (int64_t i = 0; i < len; ++i) x[r * len + i] = decode_minifloat(q[i], kE4M3) * s;
  }
}

// ---- MXTensor -----------------------------------------------------------------------------

namespace {

struct MxElementInfo {
  MxElement e;
  const char* torch_name;
  MiniFloat f;
  int emax;
  int bits;
};
const MxElementInfo& mx_info(MxElement e) {
  static const MxElementInfo table[] = {{MxElement::fp8_e4m3, "float8_e4m3fn", kE4M3, 8, 8},
                                        {MxElement::fp8_e5m2, "float8_e5m2", kE5M2, 15, 8},
                                        {MxElement::fp6_e2m3, "fp6_e2m3", kE2M3, 2, 6},
                                        {MxElement::fp6_e3m2, "fp6_e3m2", kE3M2, 4, 6},
                                        {MxElement::fp4_e2m1, "float4_e2m1fn_x2", kE2M1, 2, 4}};
  return table[static_cast<int>(e)];
}

// Quantizes one block of 32 values; returns the biased exponent and writes element codes.
uint8_t mx_quantize_block(const float* x, int64_t n, const MxElementInfo& info, bool rceil,
                          uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const uint8_t s =
      mx_block_exponent(amax, info.f, info.emax, rceil ? MxScaling::rceil : MxScaling::floor);
  float mul;
  if (rceil) {
    mul = s == 255
              ? std::numeric_limits<float>::quiet_NaN()
              : (s == 254 ? std::ldexp(1.0f, -127) : (s == 0 ? 1.0f : std::ldexp(1.0f, 127 - s)));
  } else {
    // to_mx divides by max(2^(s-127), smallest normal).
    mul = s == 255 ? 0.0f : 1.0f / std::max(std::ldexp(1.0f, int(s) - 127), kF32SmallestNormal);
  }
  for (int64_t i = 0; i < n; ++i)
    codes[i] = encode_minifloat(std::clamp(x[i] * mul, -info.f.max, info.f.max), info.f);
  return s;
}

}  // namespace

const char* mx_element_torch_name(MxElement e) { return mx_info(e).torch_name; }

MXTensor::MXTensor(Tensor qdata, Tensor scale, MxElement elem, bool rceil, bool dynamic_activation,
                   Shape shape, json attributes)
    : QTensor("MXTensor", std::move(shape), {{"qdata", qdata}, {"scale", scale}},
              std::move(attributes)),
      elem_(elem),
      rceil_(rceil),
      dynamic_activation_(dynamic_activation) {
  swizzled_ = attributes_.value("is_swizzled_scales", false);
}

std::shared_ptr<MXTensor> MXTensor::from_float(const Tensor& w_in, MxElement elem,
                                               bool dynamic_activation) {
  check_weight(w_in, "MXTensor");
  const Tensor w = f32_contiguous(w_in);
  const int64_t N = w.size(0), K = w.size(1);
  AO_CHECK(K % 32 == 0, "MXTensor: K = {} is not a multiple of the block size 32", K);
  const MxElementInfo& info = mx_info(elem);
  const int64_t blocks = K / 32;
  Tensor q = info.bits == 8   ? Tensor::empty({N, K}, elem == MxElement::fp8_e4m3 ? DType::f8_e4m3fn
                                                                                  : DType::f8_e5m2)
             : info.bits == 4 ? Tensor::empty({N, K / 2}, DType::u8)
                              : Tensor::empty({N, K}, DType::u8);
  const int64_t srows = ((N + 127) / 128) * 32, scols = ((blocks + 3) / 4) * 16;
  Tensor s = Tensor::zeros({srows, scols}, DType::e8m0);
  auto* qd = static_cast<uint8_t*>(q.data_ptr());
  auto* sd = static_cast<uint8_t*>(s.data_ptr());
  const float* src = w.data<float>();
  parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    uint8_t codes[32];
    for (int64_t n = b; n < e; ++n)
      for (int64_t bi = 0; bi < blocks; ++bi) {
        sd[swizzled_index(n, bi, blocks)] =
            mx_quantize_block(src + n * K + bi * 32, 32, info, true, codes);
        for (int64_t i = 0; i < 32; ++i) {
          const int64_t k = bi * 32 + i;
          if (info.bits == 4) {
            uint8_t& byte = qd[n * (K / 2) + k / 2];
            byte = (k % 2 == 0) ? codes[i] : static_cast<uint8_t>(byte | (codes[i] << 4));
          } else {
            qd[n * K + k] = codes[i];
          }
        }
      }
  });
  json kp = typed("KernelPreference", "AUTO");
  json a;
  a["elem_dtype"] = elem == MxElement::fp6_e2m3 || elem == MxElement::fp6_e3m2
                        ? json(info.torch_name)
                        : torch_dtype(info.torch_name);
  a["block_size"] = 32;
  a["orig_dtype"] = torch_dtype("float32");
  a["kernel_preference"] = kp;
  a["act_quant_kwargs"] = dynamic_activation
                              ? typed("QuantizeTensorToMXKwargs",
                                      json{{"elem_dtype", a["elem_dtype"]},
                                           {"block_size", 32},
                                           {"scaling_mode", typed("ScaleCalculationMode", "RCEIL")},
                                           {"kernel_preference", kp},
                                           {"is_swizzled_scales", true}})
                              : json(nullptr);
  a["is_swizzled_scales"] = true;
  return std::make_shared<MXTensor>(q, s, elem, true, dynamic_activation, Shape{N, K},
                                    std::move(a));
}

QTensorPtr MXTensor::load(const std::string& where, std::vector<io::NamedTensor> data,
                          const json& a) {
  DataMap d(where, data);
  const std::string en = torch_name_of(attr(where, a, "elem_dtype"));
  MxElement elem{};
  bool found = false;
  for (MxElement e : {MxElement::fp8_e4m3, MxElement::fp8_e5m2, MxElement::fp6_e2m3,
                      MxElement::fp6_e3m2, MxElement::fp4_e2m1})
    if (en == mx_info(e).torch_name) elem = e, found = true;
  AO_CHECK(found, "{}: MXTensor elem_dtype '{}' is not supported", where, en);
  AO_CHECK(attr(where, a, "block_size") == 32,
           "{}: MXTensor block_size {} is not supported (expected 32)", where,
           a["block_size"].dump());
  const MxElementInfo& info = mx_info(elem);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 2, "{}: qdata must be 2-D, got {}", where, shape_str(q.shape()));
  const int64_t N = q.size(0), K = info.bits == 4 ? q.size(1) * 2 : q.size(1);
  AO_CHECK(K % 32 == 0, "{}: MXTensor K = {} is not a multiple of 32", where, K);
  if (info.bits == 8)
    d.expect_dtype("qdata", elem == MxElement::fp8_e4m3 ? DType::f8_e4m3fn : DType::f8_e5m2);
  else
    d.expect_dtype("qdata", DType::u8);
  d.expect_dtype("scale", DType::e8m0);
  const bool swz = a.value("is_swizzled_scales", false);
  const int64_t blocks = K / 32;
  if (swz)
    AO_CHECK(d.get("scale").numel() == swizzled_size(N, blocks),
             "{}: swizzled scale has {} elements, expected {}", where, d.get("scale").numel(),
             swizzled_size(N, blocks));
  else
    d.expect_shape("scale", {N, blocks});
  ActivationQuant dyn = ActivationQuant::none;
  if (a.contains("act_quant_kwargs") && !a["act_quant_kwargs"].is_null()) {
    const json& kd = attr(where, a["act_quant_kwargs"], "_data");
    AO_CHECK(torch_name_of(kd["elem_dtype"]) == en,
             "{}: MX activation element type differs from the weight's ({}); not supported", where,
             kd["elem_dtype"].dump());
    dyn = ActivationQuant::mx;
  }
  const bool rceil = a.contains("act_quant_kwargs") && !a["act_quant_kwargs"].is_null()
                         ? torch_name_of(a["act_quant_kwargs"]["_data"].value(
                               "scaling_mode", json("FLOOR"))) == "RCEIL"
                         : true;
  return std::make_shared<MXTensor>(q.contiguous(), d.get("scale").contiguous(), elem, rceil,
                                    dyn == ActivationQuant::mx, Shape{N, K}, a);
}

void MXTensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  const int64_t K = shape_[1], blocks = K / 32;
  const MxElementInfo& info = mx_info(elem_);
  const auto* q = static_cast<const uint8_t*>(data("qdata").data_ptr());
  const auto* s = static_cast<const uint8_t*>(data("scale").data_ptr());
  const float* lut = minifloat_table(info.f);
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const float sc =
          e8m0_to_float(s[swizzled_ ? swizzled_index(n, bi, blocks) : n * blocks + bi]);
      float* o = out + (n - n0) * K + bi * 32;
      if (info.bits == 4) {
        const uint8_t* b = q + n * (K / 2) + bi * 16;
        for (int64_t i = 0; i < 16; ++i) {
          o[2 * i] = lut[b[i] & 0xF] * sc;
          o[2 * i + 1] = lut[b[i] >> 4] * sc;
        }
      } else {
        const uint8_t* b = q + n * K + bi * 32;
        for (int64_t i = 0; i < 32; ++i) o[i] = lut[b[i]] * sc;
      }
    }
}

void MXTensor::quantize_activation(float* x, int64_t M) const {
  if (!dynamic_activation_) return;
  const int64_t K = shape_[1];
  const MxElementInfo& info = mx_info(elem_);
  uint8_t codes[32];
  for (int64_t m = 0; m < M; ++m)
    for (int64_t bi = 0; bi < K / 32; ++bi) {
      float* blk = x + m * K + bi * 32;
      const float sc = e8m0_to_float(mx_quantize_block(blk, 32, info, rceil_, codes));
      for (int i = 0; i < 32; ++i) blk[i] = decode_minifloat(codes[i], info.f) * sc;
    }
}

// ---- NVFP4Tensor --------------------------------------------------------------------------

namespace {

constexpr float kE4M3Tiny = 0.015625f;  // torch.finfo(float8_e4m3fn).tiny

// nvfp4_quantize with a per-tensor scale: writes block scale codes (e4m3) and fp4 codes.
void nvfp4_quantize_row(const float* x, int64_t K, float pts, uint8_t* scale_codes,
                        uint8_t* fp4_codes) {
  for (int64_t bi = 0; bi < K / 16; ++bi) {
    const float* blk = x + bi * 16;
    float amax = 0.0f;
    for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(blk[i]));
    const float bs = amax / kE2M1.max;
    const uint8_t s8 = encode_minifloat(std::clamp(bs / pts, kE4M3Tiny, kE4M3.max), kE4M3);
    const float recip = (1.0f / pts) / decode_minifloat(s8, kE4M3);
    scale_codes[bi] = s8;
    for (int i = 0; i < 16; ++i)
      fp4_codes[bi * 16 + i] = encode_minifloat(std::clamp(blk[i] * recip, -6.0f, 6.0f), kE2M1);
  }
}

float nvfp4_per_tensor_scale(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float pts = amax / (kE4M3.max * kE2M1.max);
  return pts > 0.0f ? pts : 1.0f;  // all-zero tensor: any scale works; avoid 0/0
}

// NVFP4Tensor's data tensors in TorchAO's order (see affine_int8_parts for why a function).
std::vector<io::NamedTensor> nvfp4_parts(const Tensor& qdata, const Tensor& scale,
                                         const std::optional<Tensor>& per_tensor_scale) {
  std::vector<io::NamedTensor> parts;
  if (per_tensor_scale) parts.push_back({"per_tensor_scale", *per_tensor_scale});
  parts.push_back({"qdata", qdata});
  parts.push_back({"scale", scale});
  return parts;
}

}  // namespace

NVFP4Tensor::NVFP4Tensor(Tensor qdata, Tensor scale, std::optional<Tensor> per_tensor_scale,
                         bool dynamic_activation, Shape shape, json attributes)
    : QTensor("NVFP4Tensor", std::move(shape), nvfp4_parts(qdata, scale, per_tensor_scale),
              std::move(attributes)),
      dynamic_activation_(dynamic_activation) {
  swizzled_ = attributes_.value("is_swizzled_scales", false);
}

std::shared_ptr<NVFP4Tensor> NVFP4Tensor::from_float(const Tensor& w_in, bool dynamic_activation) {
  check_weight(w_in, "NVFP4Tensor");
  const Tensor w = f32_contiguous(w_in);
  const int64_t N = w.size(0), K = w.size(1), blocks = K / 16;
  AO_CHECK(K % 16 == 0, "NVFP4Tensor: K = {} is not a multiple of the block size 16", K);
  const float pts = nvfp4_per_tensor_scale(w.data<float>(), N * K);
  Tensor q = Tensor::empty({N, K / 2}, DType::u8);
  Tensor s = Tensor::zeros({((N + 127) / 128) * 32, ((blocks + 3) / 4) * 16}, DType::f8_e4m3fn);
  Tensor p = Tensor::full({}, pts, DType::f32);
  auto* qd = q.data<uint8_t>();
  auto* sd = static_cast<uint8_t*>(s.data_ptr());
  parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> sc(static_cast<size_t>(blocks)), codes(static_cast<size_t>(K));
    for (int64_t n = b; n < e; ++n) {
      nvfp4_quantize_row(w.data<float>() + n * K, K, pts, sc.data(), codes.data());
      for (int64_t bi = 0; bi < blocks; ++bi) sd[swizzled_index(n, bi, blocks)] = sc[bi];
      for (int64_t k = 0; k < K; k += 2)
        qd[n * (K / 2) + k / 2] = static_cast<uint8_t>(codes[k] | (codes[k + 1] << 4));
    }
  });
  json a;
  a["is_swizzled_scales"] = true;
  a["use_triton_kernel"] = false;
  a["act_quant_kwargs"] = dynamic_activation ? typed("QuantizeTensorToNVFP4Kwargs",
                                                     json{{"block_size", 16},
                                                          {"is_swizzled_scales", true},
                                                          {"use_triton_kernel", false},
                                                          {"use_dynamic_per_tensor_scale", true}})
                                             : json(nullptr);
  a["block_size"] = 16;
  a["orig_dtype"] = torch_dtype("float32");
  return std::make_shared<NVFP4Tensor>(q, s, p, dynamic_activation, Shape{N, K}, std::move(a));
}

QTensorPtr NVFP4Tensor::load(const std::string& where, std::vector<io::NamedTensor> data,
                             const json& a) {
  DataMap d(where, data);
  AO_CHECK(attr(where, a, "block_size") == 16, "{}: NVFP4Tensor block_size {} (expected 16)", where,
           a["block_size"].dump());
  if (d.has("act_per_tensor_scale"))
    throw NotSupported(fmt::format("{}: NVFP4Tensor with a static act_per_tensor_scale", where));
  d.expect_dtype("qdata", DType::u8);
  d.expect_dtype("scale", DType::f8_e4m3fn);
  const Tensor& q = d.get("qdata");
  AO_CHECK(q.dim() == 2, "{}: qdata must be 2-D, got {}", where, shape_str(q.shape()));
  const int64_t N = q.size(0), K = q.size(1) * 2, blocks = K / 16;
  AO_CHECK(K % 16 == 0, "{}: NVFP4Tensor K = {} is not a multiple of 16", where, K);
  const bool swz = a.value("is_swizzled_scales", false);
  if (swz)
    AO_CHECK(d.get("scale").numel() == swizzled_size(N, blocks),
             "{}: swizzled scale has {} elements, expected {}", where, d.get("scale").numel(),
             swizzled_size(N, blocks));
  else
    d.expect_shape("scale", {N, blocks});
  std::optional<Tensor> pts;
  if (d.has("per_tensor_scale")) {
    AO_CHECK(d.get("per_tensor_scale").numel() == 1, "{}: per_tensor_scale must hold one value",
             where);
    pts = f32_contiguous(d.get("per_tensor_scale"));
  }
  const bool dyn = a.contains("act_quant_kwargs") && !a["act_quant_kwargs"].is_null();
  return std::make_shared<NVFP4Tensor>(q.contiguous(), d.get("scale").contiguous(), pts, dyn,
                                       Shape{N, K}, a);
}

void NVFP4Tensor::dequantize_rows(int64_t n0, int64_t n1, float* out) const {
  const int64_t K = shape_[1], blocks = K / 16;
  const auto* q = data("qdata").data<uint8_t>();
  const auto* s = static_cast<const uint8_t*>(data("scale").data_ptr());
  const float pts = has_data("per_tensor_scale") ? data("per_tensor_scale").data<float>()[0] : 1.0f;
  const float* e4m3 = minifloat_table(kE4M3);
  const float* e2m1 = minifloat_table(kE2M1);
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const float sc = e4m3[s[swizzled_ ? swizzled_index(n, bi, blocks) : n * blocks + bi]] * pts;
      const uint8_t* b = q + n * (K / 2) + bi * 8;
      float* o = out + (n - n0) * K + bi * 16;
      for (int64_t i = 0; i < 8; ++i) {
        o[2 * i] = e2m1[b[i] & 0xF] * sc;
        o[2 * i + 1] = e2m1[b[i] >> 4] * sc;
      }
    }
}

void NVFP4Tensor::quantize_activation(float* x, int64_t M) const {
  if (!dynamic_activation_) return;
  const int64_t K = shape_[1], blocks = K / 16;
  const float pts = nvfp4_per_tensor_scale(x, M * K);
  std::vector<uint8_t> sc(static_cast<size_t>(blocks)), codes(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    nvfp4_quantize_row(x + m * K, K, pts, sc.data(), codes.data());
    for (int64_t k = 0; k < K; ++k)
      x[m * K + k] =
          decode_minifloat(codes[k], kE2M1) * (decode_minifloat(sc[k / 16], kE4M3) * pts);
  }
}

// ---- the type table -----------------------------------------------------------------------

const std::vector<QTensorTypeInfo>& qtensor_types() {
  static const std::vector<QTensorTypeInfo> table = {
      {"Int8Tensor",
       {"qdata", "scale"},
       {"zero_point", "act_quant_scale", "act_quant_zero_point", "act_pre_scale"},
       Int8Tensor::load},
      {"Int4Tensor", {"qdata", "scale", "zero_point"}, {"act_pre_scale"}, Int4Tensor::load},
      {"Int4TilePackedTo4dTensor",
       {"qdata", "scale_and_zero"},
       {"act_pre_scale"},
       Int4TilePackedTo4dTensor::load},
      {"IntxUnpackedToInt8Tensor",
       {"qdata", "scale", "zero_point"},
       {},
       IntxUnpackedToInt8Tensor::load},
      {"Float8Tensor", {"qdata", "scale"}, {}, Float8Tensor::load},
      {"MXTensor", {"qdata", "scale"}, {}, MXTensor::load},
      {"NVFP4Tensor",
       {"qdata", "scale"},
       {"per_tensor_scale", "act_per_tensor_scale"},
       NVFP4Tensor::load},
  };
  return table;
}

const QTensorTypeInfo* find_qtensor_type(std::string_view name) {
  for (const auto& t : qtensor_types())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace ao::quant

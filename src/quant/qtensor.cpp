#include "ao/quant/qtensor.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "kernels/cpu/quant_kernels.h"

namespace ao::quant {

QTensor::QTensor(std::string type, Shape shape, std::vector<io::NamedTensor> data,
                 nlohmann::ordered_json attributes)
    : type_(std::move(type)),
      shape_(std::move(shape)),
      data_(std::move(data)),
      attributes_(std::move(attributes)) {
  AO_CHECK(shape_.size() == 2 && shape_[0] > 0 && shape_[1] > 0,
           "{}: weight shape must be [N, K] with N, K > 0, got {}", type_, shape_str(shape_));
}

size_t QTensor::nbytes() const {
  size_t b = 0;
  for (const auto& d : data_) b += d.tensor.nbytes();
  return b;
}

bool QTensor::has_data(std::string_view name) const {
  return std::any_of(data_.begin(), data_.end(), [&](const auto& d) { return d.name == name; });
}

const Tensor& QTensor::data(std::string_view name) const {
  for (const auto& d : data_)
    if (d.name == name) return d.tensor;
  fail("{} has no data tensor '{}'", type_, name);
}

nlohmann::ordered_json QTensor::metadata() const {
  nlohmann::ordered_json j;
  j["_type"] = type_;
  j["_data"] = attributes_;
  j["_tensor_data_names"] = nlohmann::ordered_json::array();
  for (const auto& d : data_) j["_tensor_data_names"].push_back(d.name);
  return j;
}

std::string QTensor::str() const {
  std::string s = fmt::format("{}(shape={}", type_, shape_str(shape_));
  for (const auto& d : data_)
    s +=
        fmt::format(", {}={}{}", d.name, dtype_name(d.tensor.dtype()), shape_str(d.tensor.shape()));
  for (const auto& [k, v] : attributes_.items()) {
    // Show TorchAO's {"_type": T, "_data": D} wrappers compactly as T(D).
    std::string val =
        v.is_object() && v.contains("_type") ? v["_type"].get<std::string>() : v.dump();
    if (v.is_object() && v.contains("_data") && !v["_data"].is_object())
      val = fmt::format("{}({})", val, v["_data"].dump());
    s += fmt::format(", {}={}", k, val);
  }
  return s + ")";
}

Tensor QTensor::dequantize() const {
  const int64_t N = shape_[0], K = shape_[1];
  Tensor out = Tensor::empty({N, K}, DType::f32);
  float* p = out.data<float>();
  parallel_for(0, N, std::max<int64_t>(1, 65536 / K),
               [&](int64_t b, int64_t e) { dequantize_rows(b, e, p + b * K); });
  return out;
}

void QTensor::linear(const float* x, int64_t M, float* y) const {
  const int64_t N = shape_[0], K = shape_[1];
  if (M <= 0) return;
  constexpr int64_t kGemvMaxM = 8;
  if (M <= kGemvMaxM && linear_integer(x, M, y)) return;
  std::vector<float> xq;
  if (quantizes_activation()) {
    xq.assign(x, x + M * K);
    quantize_activation(xq.data(), M);
    x = xq.data();
  }
  if (M <= kGemvMaxM) {
    // Decode: each thread takes a band of output rows; fused kernels read the packed weight
    // once, others dequantize 16 rows at a time into a small buffer and dot.
    // At least ~64K multiply-adds per thread: waking threads costs more on small layers.
    const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(K * M, 1));
    parallel_for(0, N, grain, [&](int64_t b, int64_t e) {
      if (gemv_rows(x, M, b, e, y + b, N)) return;
      std::vector<float> tile(static_cast<size_t>(16 * K));
      for (int64_t n0 = b; n0 < e; n0 += 16) {
        const int64_t n1 = std::min(e, n0 + 16);
        dequantize_rows(n0, n1, tile.data());
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = n0; n < n1; ++n)
            y[m * N + n] = kernels::cpu::quant::dot_f32(x + m * K, tile.data() + (n - n0) * K, K);
      }
    });
    return;
  }
  // Prefill: dequantize a band of rows to f32 (threads), multiply with sgemm.
  const int64_t band = std::max<int64_t>(64, std::min<int64_t>(N, (int64_t(8) << 20) / (4 * K)));
  std::vector<float> tile(static_cast<size_t>(std::min(band, N) * K));
  for (int64_t n0 = 0; n0 < N; n0 += band) {
    const int64_t n1 = std::min(N, n0 + band);
    parallel_for(n0, n1, std::max<int64_t>(1, 65536 / K),
                 [&](int64_t b, int64_t e) { dequantize_rows(b, e, tile.data() + (b - n0) * K); });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M),
                static_cast<int>(n1 - n0), static_cast<int>(K), 1.0f, x, static_cast<int>(K),
                tile.data(), static_cast<int>(K), 0.0f, y + n0, static_cast<int>(N));
  }
}

}  // namespace ao::quant

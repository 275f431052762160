// Helpers for the CUDA tests: skip without a GPU, device buffers with sentinel guards, bf16
// bits, random data, NMSE.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ao/kernels/cuda/kernels.h"

bool ao_cuda_available();  // src/core/device_cuda.cu

#define AO_SKIP_WITHOUT_GPU() \
  if (!ao_cuda_available()) GTEST_SKIP() << "no CUDA device"

namespace ao::cuda::testing {

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// Round to nearest even into e4m3fn, saturating at 448 (the value, not the code).
inline float e4m3_round(float v) {
  const float a = std::fabs(v);
  if (a == 0.f) return 0.f;
  if (a >= 448.f) return std::copysign(448.f, v);
  int e = 0;
  std::frexp(a, &e);       // a = f 2^e, f in [0.5, 1): floor(log2 a) = e - 1, exactly
  e = std::max(e - 1, -6);  // subnormals share the step of the smallest normal binade
  const float step = std::ldexp(1.f, e - 3);
  return std::copysign(std::nearbyint(a / step) * step, v);
}

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = f32_to_bf16(v[i]);
  return o;
}
inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = bf16_to_f32(v[i]);
  return o;
}

// Normalized mean squared error sum (a - b)^2 / sum b^2.
inline double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return num / std::max(den, 1e-30);
}

// An RMSNorm weight of k bf16 values 1 + N(0, 0.1) (seeded like randn).
inline std::vector<uint16_t> norm_weight_bf16(int64_t k, uint32_t seed) {
  auto w = to_bf16(randn(static_cast<size_t>(k), seed, 0.1f));
  for (auto& v : w) v = f32_to_bf16(1.f + bf16_to_f32(v));
  return w;
}

// The GEMV's fused RMSNorm as the kernels round it: bf16(bf16(x * inv_rms) * weight), eps 1e-5,
// for m rows of k residual values x (f32) and a bf16 norm weight.
inline std::vector<float> reference_rmsnorm(const std::vector<float>& x, int64_t m, int64_t k,
                                            const std::vector<uint16_t>& weight) {
  std::vector<float> out(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < k; ++j) ss += x[i * k + j] * x[i * k + j];
    const float inv = 1.f / std::sqrt(static_cast<float>(ss / k) + 1e-5f);
    for (int64_t j = 0; j < k; ++j)
      out[i * k + j] = round_bf16(round_bf16(x[i * k + j] * inv) * bf16_to_f32(weight[j]));
  }
  return out;
}

// GEMV arguments with the fused RMSNorm prologue (eps 1e-5) over m rows of the residual x.
inline GemvArgs rmsnorm_gemv_args(int m, const float* x, const uint16_t* weight, GemvOutput out,
                                  void* y) {
  GemvArgs a;
  a.m = m;
  a.input = GemvInput::rmsnorm;
  a.x = x;
  a.rms_weight = weight;
  a.eps = 1e-5f;
  a.output = out;
  a.y = y;
  return a;
}

// Puts the default GEMV launch choices back when a test that overrides them ends (also when an
// assertion ends it early).
struct TuningReset {
  ~TuningReset() { set_gemv_tuning(GemvTuning{}); }
};

// Puts the default decode-attention tuning back when a test that overrides it ends (also when
// an assertion ends it early).
struct AttentionTuningReset {
  ~AttentionTuningReset() { set_attention_tuning(AttentionTuning{}); }
};

// A device buffer of `count` T with 4 KiB sentinel guards on both sides.
template <typename T>
class Guarded {
 public:
  static constexpr size_t kGuard = 4096;
  // The fill and the uploads run on the legacy stream and may still be landing when they return
  // (cudaMemset; a pageable cudaMemcpy's DMA), while the tests launch on non-blocking streams that
  // do not wait for it: both synchronize, or a late fill could overwrite a kernel's output (seen
  // under ctest -j: DependentLaunchChainMatchesReference/fp8_tensor, docs/CUDA.md lab note 58).
  explicit Guarded(size_t count) : count_(count) {
    AO_CUDA_CHECK(cudaMalloc(&base_, bytes() + 2 * kGuard));
    AO_CUDA_CHECK(cudaMemset(base_, 0xA5, bytes() + 2 * kGuard));
    AO_CUDA_CHECK(cudaDeviceSynchronize());
  }
  explicit Guarded(const std::vector<T>& v) : Guarded(v.size()) { upload(v); }
  ~Guarded() { cudaFree(base_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  T* get() const { return reinterpret_cast<T*>(static_cast<uint8_t*>(base_) + kGuard); }
  size_t bytes() const { return count_ * sizeof(T); }
  void upload(const std::vector<T>& v) {
    AO_CUDA_CHECK(cudaMemcpy(get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    AO_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download() const {
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(count_);
    AO_CUDA_CHECK(cudaMemcpy(v.data(), get(), bytes(), cudaMemcpyDeviceToHost));
    return v;
  }
  // True when both guards still hold the sentinel.
  bool guards_intact() const {
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint8_t> g(kGuard);
    for (int side = 0; side < 2; ++side) {
      const uint8_t* p = static_cast<uint8_t*>(base_) + (side ? kGuard + bytes() : 0);
      AO_CUDA_CHECK(cudaMemcpy(g.data(), p, kGuard, cudaMemcpyDeviceToHost));
      for (uint8_t b : g)
        if (b != 0xA5) return false;
    }
    return true;
  }

 private:
  void* base_ = nullptr;
  size_t count_;
};

}  // namespace ao::cuda::testing

// CPU kernels against their scalar references, with odd shapes and sentinels past the output.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ao/core/dtype.h"
#include "ao/core/parallel.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"

namespace ao::kernels::cpu {
namespace {

constexpr float kSentinel = 12345.0f;

std::vector<float> random_vec(size_t n, uint32_t seed, float a = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

double nmse(const float* a, const float* ref, int64_t n) {
  double err = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i)
    err += (a[i] - ref[i]) * double(a[i] - ref[i]), norm += ref[i] * double(ref[i]);
  return err / std::max(norm, 1e-30);
}

struct MatShape {
  int64_t M, N, K;
};

class CpuKernelMatmul : public ::testing::TestWithParam<MatShape> {};

TEST_P(CpuKernelMatmul, GemmMatchesReference) {
  const auto [M, N, K] = GetParam();
  auto x = random_vec(M * K, 1), w = random_vec(N * K, 2);
  std::vector<float> y(M * N + 8, kSentinel), ref(M * N);
  gemm_f32(x.data(), w.data(), y.data(), M, N, K);
  gemm_f32_ref(x.data(), w.data(), ref.data(), M, N, K);
  EXPECT_LT(nmse(y.data(), ref.data(), M * N), 1e-11);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[M * N + i], kSentinel) << "write past the output";
}

TEST_P(CpuKernelMatmul, GemvMatchesReference) {
  const auto [M, N, K] = GetParam();
  (void)M;
  auto x = random_vec(K, 3), w = random_vec(N * K, 4);
  std::vector<float> y(N + 8, kSentinel), ref(N), scalar(N);
  gemv_f32(w.data(), x.data(), y.data(), N, K);
  gemv_f32_ref(w.data(), x.data(), ref.data(), N, K);
  detail::gemv_rows_scalar(w.data(), x.data(), scalar.data(), 0, N, K);
  EXPECT_LT(nmse(y.data(), ref.data(), N), 1e-11);
  EXPECT_LT(nmse(scalar.data(), ref.data(), N), 1e-11);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[N + i], kSentinel) << "write past the output";
}

TEST_P(CpuKernelMatmul, HalfWeightsMatchReference) {
  const auto [M, N, K] = GetParam();
  auto x = random_vec(M * K, 21), wf = random_vec(N * K, 22);
  for (HalfType t : {HalfType::bf16, HalfType::f16}) {
    std::vector<uint16_t> w(N * K);
    for (int64_t i = 0; i < N * K; ++i)
      w[i] = t == HalfType::bf16 ? f32_to_bf16(wf[i]) : f32_to_f16(wf[i]);
    std::vector<float> y(M * N + 8, kSentinel), ref(M * N), row(N);
    gemm_half(x.data(), w.data(), t, y.data(), M, N, K);
    for (int64_t m = 0; m < M; ++m) {
      gemv_half_ref(w.data(), t, x.data() + m * K, row.data(), N, K);
      std::copy(row.begin(), row.end(), ref.begin() + m * N);
    }
    EXPECT_LT(nmse(y.data(), ref.data(), M * N), 1e-11) << (t == HalfType::bf16 ? "bf16" : "f16");
    for (int i = 0; i < 8; ++i) EXPECT_EQ(y[M * N + i], kSentinel) << "write past the output";
    std::vector<float> scalar(N);
    detail::gemv_rows_half_scalar(w.data(), t, x.data(), scalar.data(), 0, N, K);
    gemv_half_ref(w.data(), t, x.data(), row.data(), N, K);
    EXPECT_LT(nmse(scalar.data(), row.data(), N), 1e-11);
  }
}

INSTANTIATE_TEST_SUITE_P(CpuKernel, CpuKernelMatmul,
                         ::testing::Values(MatShape{1, 1, 1}, MatShape{2, 3, 5},
                                           MatShape{3, 17, 33}, MatShape{7, 172, 64},
                                           MatShape{5, 64, 172}, MatShape{1, 513, 255},
                                           MatShape{33, 101, 1000}));

TEST(CpuKernelGemv, ThreadCountDoesNotChangeResult) {
  const int64_t N = 1001, K = 517;
  auto x = random_vec(K, 5), w = random_vec(N * K, 6);
  std::vector<float> a(N), b(N);
  const int saved = num_threads();
  set_num_threads(1);
  gemv_f32(w.data(), x.data(), a.data(), N, K);
  set_num_threads(2);
  gemv_f32(w.data(), x.data(), b.data(), N, K);
  set_num_threads(saved);
  EXPECT_EQ(a, b);
}

struct AttnCase {
  int H, KV, hd;
  int64_t T, pos0;
  int window;
};

class CpuKernelAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CpuKernelAttention, MatchesReference) {
  const auto c = GetParam();
  const int64_t cap = c.pos0 + c.T + 3;
  auto q = random_vec(c.T * c.H * c.hd, 7, 2.0f);
  auto k = random_vec(c.KV * cap * c.hd, 8, 2.0f), v = random_vec(c.KV * cap * c.hd, 9);
  const int64_t n = c.T * c.H * c.hd;
  std::vector<float> out(n + 8, kSentinel), ref(n);
  AttentionShape s{c.H, c.KV, c.hd, cap, c.window};
  attention_f32(q.data(), k.data(), v.data(), out.data(), c.T, c.pos0, s);
  attention_f32_ref(q.data(), k.data(), v.data(), ref.data(), c.T, c.pos0, s);
  EXPECT_LT(nmse(out.data(), ref.data(), n), 1e-11);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[n + i], kSentinel) << "write past the output";
}

INSTANTIATE_TEST_SUITE_P(CpuKernel, CpuKernelAttention,
                         ::testing::Values(AttnCase{1, 1, 2, 1, 0, 0}, AttnCase{8, 4, 8, 5, 0, 0},
                                           AttnCase{8, 4, 8, 1, 37, 0},
                                           AttnCase{6, 2, 14, 9, 11, 0},
                                           AttnCase{4, 1, 64, 3, 200, 0},
                                           AttnCase{4, 2, 16, 7, 20, 5}));

TEST(CpuKernelAttentionEdge, FirstPositionCopiesValue) {
  // With one visible position the output is that position's value row.
  const int hd = 6;
  auto q = random_vec(hd, 10), k = random_vec(hd, 11), v = random_vec(hd, 12);
  std::vector<float> out(hd);
  attention_f32(q.data(), k.data(), v.data(), out.data(), 1, 0, AttentionShape{1, 1, hd, 1, 0});
  for (int i = 0; i < hd; ++i) EXPECT_FLOAT_EQ(out[i], v[i]);
}

TEST(CpuKernelElementwise, RmsNormAndSiluMul) {
  const int64_t rows = 3, n = 37;
  auto x = random_vec(rows * n, 13), w = random_vec(n, 14);
  std::vector<float> y(rows * n);
  rmsnorm_f32(x.data(), w.data(), y.data(), rows, n, 1e-5f);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
    const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[r * n + i], w[i] * x[r * n + i] * inv, 1e-5);
  }
  auto g = random_vec(n, 15, 4.0f), u = random_vec(n, 16);
  auto g0 = g;
  silu_mul_f32(g.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(g[i], g0[i] / (1.0 + std::exp(-double(g0[i]))) * u[i], 1e-6);
}

TEST(CpuKernelElementwise, LogSoftmaxNormalizes) {
  auto x = random_vec(513, 17, 30.0f);
  std::vector<float> lp(513);
  log_softmax_f32(x.data(), lp.data(), 513);
  double s = 0;
  for (float v : lp) s += std::exp(double(v));
  EXPECT_NEAR(s, 1.0, 1e-5);
}

}  // namespace
}  // namespace ao::kernels::cpu

// Op-by-op check of the quantized linear kernels (ggml test-backend-ops style): for a table
// of formats and odd shapes, linear() must equal dequantize-then-fp64-matmul of the same
// (activation-quantized) input within an NMSE bound, never write outside y, and the
// quantized weight must keep the SQNR TorchAO's own tests ask for.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ao/quant/config.h"
#include "kernels/cpu/quant_kernels.h"

using namespace ao;
using namespace ao::quant;

namespace {

Tensor random_tensor(const Shape& s, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Tensor t = Tensor::empty(s, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

double sqnr_db(const Tensor& ref, const Tensor& x) {
  double s = 0, e = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double r = ref.data<float>()[i], d = r - x.data<float>()[i];
    s += r * r;
    e += d * d;
  }
  return e == 0 ? 200.0 : 10.0 * std::log10(s / e);
}

struct LinearCase {
  const char* config;
  double min_sqnr_db;  // weight round trip
};

const std::vector<LinearCase> kCases = {
    {"int8wo", 38},         {"int8wo-g32", 38},  {"int8dq", 38},      {"int4wo-g32", 15},
    {"int4wo-g64", 15},     {"int4wo-g128", 14}, {"intx4wo-g32", 14}, {"intx2wo-g32-asym", 5},
    {"intx8wo", 38},        {"8da4w", 14},       {"fp8wo", 25},       {"fp8dq-row", 25},
    {"fp8dq-tensor", 25},   {"mxfp8", 25},       {"mxfp6", 18},       {"mxfp6-e3m2", 13},
    {"mxfp4", 13},          {"nvfp4", 13},       {"nvfp4wo", 13},     {"int4wo-g32-tp", 14},
    {"int4wo-g128-hqq", 14}};

class QuantLinear : public ::testing::TestWithParam<LinearCase> {};

TEST_P(QuantLinear, MatchesDequantizeThenMatmulOnOddShapes) {
  const QuantConfig cfg = parse_quant_config(GetParam().config);
  const int64_t Ns[] = {1, 37, 130};
  const int64_t Ks[] = {64, 96, 172, 256};
  const int64_t Ms[] = {1, 3, 8, 9, 64};
  int tested = 0;
  for (int64_t N : Ns)
    for (int64_t K : Ks) {
      const Tensor w = random_tensor({N, K}, static_cast<uint32_t>(N * 1000 + K), 0.05f);
      const QTensorPtr q = quantize_weight(w, cfg, "test");
      if (!q) {
        ASSERT_NE(K % cfg.k_block(), 0) << "only K the format cannot block may stay dense";
        continue;
      }
      const Tensor deq = q->dequantize();
      if (N * K >= 64 * 64)
        EXPECT_GE(sqnr_db(w, deq), GetParam().min_sqnr_db) << "N " << N << " K " << K;
      for (int64_t M : Ms) {
        const Tensor x = random_tensor({M, K}, static_cast<uint32_t>(M + 7 * K));
        Tensor xq = x.clone();
        q->quantize_activation(xq.data<float>(), M);
        // y with sentinels on both sides
        const int64_t pad = 16;
        std::vector<float> buf(static_cast<size_t>(M * N + 2 * pad), 12345.0f);
        float* y = buf.data() + pad;
        q->linear(x.data<float>(), M, y);
        double err = 0, ref2 = 0;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double r = 0;
            for (int64_t k = 0; k < K; ++k)
              r += double(xq.data<float>()[m * K + k]) * double(deq.data<float>()[n * K + k]);
            err += (y[m * N + n] - r) * (y[m * N + n] - r);
            ref2 += r * r;
          }
        EXPECT_LE(err / std::max(ref2, 1e-30), 1e-9)
            << GetParam().config << " M " << M << " N " << N << " K " << K;
        for (int64_t i = 0; i < pad; ++i) {
          ASSERT_EQ(buf[static_cast<size_t>(i)], 12345.0f) << "write before y";
          ASSERT_EQ(buf[static_cast<size_t>(pad + M * N + i)], 12345.0f) << "write after y";
        }
        ++tested;
      }
    }
  EXPECT_GT(tested, 0);
}

INSTANTIATE_TEST_SUITE_P(QuantFormats, QuantLinear, ::testing::ValuesIn(kCases),
                         [](const auto& info) {
                           std::string n = info.param.config;
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(QuantKernels, FusedGemvMatchesScalarReference) {
  namespace kq = ao::kernels::cpu::quant;
  const int64_t N = 19, K = 200, group = 40, M = 3;
  std::mt19937 rng(5);
  std::vector<int8_t> q(N * K);
  std::vector<uint8_t> q4(N * K / 2);
  std::vector<float> scale(N * K / group), zero(N * K / group), x(M * K);
  std::vector<int8_t> zp(N * K / group);
  for (auto& v : q) v = static_cast<int8_t>(rng() % 256 - 128);
  for (auto& v : q4) v = static_cast<uint8_t>(rng() % 256);
  for (auto& v : scale) v = 0.001f * (1 + rng() % 100);
  for (auto& v : zero) v = 0.01f * (int(rng() % 100) - 50);
  for (auto& v : zp) v = static_cast<int8_t>(rng() % 16 - 8);
  for (auto& v : x) v = 0.01f * (int(rng() % 200) - 100);
  std::vector<float> a(M * N), b(M * N);
  const kq::AffineInt8Weight w8{q.data(), scale.data(), zp.data(), K, group};
  kq::gemv_affine_int8(w8, x.data(), M, 0, N, a.data(), N);
  kq::gemv_affine_int8_ref(w8, x.data(), M, 0, N, b.data(), N);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * (1 + std::fabs(b[i])));
  const kq::Int4PlainWeight w4{q4.data(), scale.data(), zero.data(), N, K, group};
  kq::gemv_int4_plain(w4, x.data(), M, 3, N, a.data(), N);
  kq::gemv_int4_plain_ref(w4, x.data(), M, 3, N, b.data(), N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N - 3; ++n)
      EXPECT_NEAR(a[m * N + n], b[m * N + n], 1e-4f * (1 + std::fabs(b[m * N + n])));
  // int8 x int8 (dynamic activations): AVX2 equals the scalar reference; one group per row is
  // exact (integer dot, then the same two float multiplies), several groups within rounding.
  std::vector<int16_t> xq(M * K);
  std::vector<float> xscale(M);
  for (auto& v : xq) v = static_cast<int16_t>(int(rng() % 511) - 255);
  for (auto& v : xscale) v = 0.001f * (1 + rng() % 100);
  kq::gemm_int8_int8(w8, xq.data(), xscale.data(), M, 0, N, a.data(), N);
  kq::gemm_int8_int8_ref(w8, xq.data(), xscale.data(), M, 0, N, b.data(), N);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(b[i])));
  const kq::AffineInt8Weight w8g32{q.data(), scale.data(), zp.data(), 160, 32};  // lane-wise path
  kq::gemm_int8_int8(w8g32, xq.data(), xscale.data(), M, 0, N, a.data(), N);
  kq::gemm_int8_int8_ref(w8g32, xq.data(), xscale.data(), M, 0, N, b.data(), N);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(b[i])));
  const kq::AffineInt8Weight w8row{q.data(), scale.data(), zp.data(), K, K};
  kq::gemm_int8_int8(w8row, xq.data(), xscale.data(), M, 0, N, a.data(), N);
  kq::gemm_int8_int8_ref(w8row, xq.data(), xscale.data(), M, 0, N, b.data(), N);
  EXPECT_EQ(a, b);
  // A partial last group (tile-packed int4 whose K is not a multiple of the group): 200 = 4 x 48
  // + 8.
  const kq::Int4PlainWeight w4p{q4.data(), scale.data(), zero.data(), N, K, 48};
  kq::gemv_int4_plain(w4p, x.data(), M, 0, N, a.data(), N);
  kq::gemv_int4_plain_ref(w4p, x.data(), M, 0, N, b.data(), N);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4f * (1 + std::fabs(b[i])));
}

}  // namespace

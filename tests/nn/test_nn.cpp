// nn modules: RoPE conventions and scaling, Linear with bias, weight swap.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "ao/core/error.h"
#include "ao/nn/linear.h"
#include "ao/nn/rope.h"
#include "ao/quant/dense_weight.h"

namespace ao::nn {
namespace {

TEST(NnRope, HalfAndInterleavedConventions) {
  const int hd = 8;
  RotaryEmbedding half(hd, 10000.0f, false), inter(hd, 10000.0f, true);
  std::vector<float> x(hd), y(hd);
  for (int i = 0; i < hd; ++i) x[i] = y[i] = float(i + 1);
  const int64_t pos = 5;
  half.apply(x.data(), 1, 1, pos);
  inter.apply(y.data(), 1, 1, pos);
  for (int i = 0; i < hd / 2; ++i) {
    const double f = 1.0 / std::pow(10000.0, 2.0 * i / hd), c = std::cos(pos * f),
                 s = std::sin(pos * f);
    // HF: pairs (i, i + hd/2).
    const double a = i + 1, b = i + 1 + hd / 2;
    EXPECT_NEAR(x[i], a * c - b * s, 1e-5);
    EXPECT_NEAR(x[i + hd / 2], b * c + a * s, 1e-5);
    // llama2.c: pairs (2i, 2i+1).
    const double p = 2 * i + 1, q = 2 * i + 2;
    EXPECT_NEAR(y[2 * i], p * c - q * s, 1e-5);
    EXPECT_NEAR(y[2 * i + 1], p * s + q * c, 1e-5);
  }
}

TEST(NnRope, PositionZeroIsIdentityAndNormPreserved) {
  RotaryEmbedding r(16, 500000.0f, false);
  std::vector<float> x(2 * 3 * 16);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i));
  auto y = x;
  r.apply(y.data(), 2, 3, 0);  // rows at positions 0 and 1
  for (int i = 0; i < 3 * 16; ++i) EXPECT_FLOAT_EQ(y[i], x[i]);
  double n0 = 0, n1 = 0;
  for (int i = 3 * 16; i < 6 * 16; ++i) n0 += x[i] * x[i], n1 += y[i] * y[i];
  EXPECT_NEAR(n0, n1, 1e-4);
}

TEST(NnRope, Llama3ScalingBands) {
  io::RopeScaling sc{"llama3", 8.0f, 1.0f, 4.0f, 8192};
  RotaryEmbedding plain(128, 500000.0f, false), scaled(128, 500000.0f, false, sc);
  for (size_t i = 0; i < plain.inv_freq().size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain.inv_freq()[i];
    if (wavelen < 8192 / 4.0)
      EXPECT_FLOAT_EQ(scaled.inv_freq()[i], plain.inv_freq()[i]);  // high frequencies kept
    if (wavelen > 8192 / 1.0)
      EXPECT_FLOAT_EQ(scaled.inv_freq()[i], plain.inv_freq()[i] / 8);  // low divided
  }
  EXPECT_THROW(RotaryEmbedding(64, 1e4f, false, io::RopeScaling{"yarn"}), Error);
}

TEST(NnLinear, BiasAndWeightSwap) {
  auto w = std::make_shared<quant::DenseWeight>(Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}));
  Linear lin("model.layers.0.self_attn.q_proj", w, Tensor::from_vector({10, 20}, {2}));
  const float x[6] = {1, 0, 0, 0, 1, 1};
  float y[4];
  lin.forward(x, 2, y);
  EXPECT_FLOAT_EQ(y[0], 11);
  EXPECT_FLOAT_EQ(y[1], 24);
  EXPECT_FLOAT_EQ(y[2], 15);
  EXPECT_FLOAT_EQ(y[3], 31);
  lin.set_weight(std::make_shared<quant::DenseWeight>(Tensor::zeros({2, 3}, DType::f32)));
  lin.forward(x, 1, y);
  EXPECT_FLOAT_EQ(y[0], 10);
  EXPECT_THROW(
      lin.set_weight(std::make_shared<quant::DenseWeight>(Tensor::zeros({3, 2}, DType::f32))),
      Error);
  EXPECT_THROW(Linear("bad", w, Tensor::from_vector({1, 2, 3}, {3})), Error);
}

TEST(NnLinear, InputObserverSeesEveryBatch) {
  auto w = std::make_shared<quant::DenseWeight>(Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}));
  Linear lin("model.layers.0.mlp.up_proj", w);
  int64_t rows = 0;
  float first = 0;
  lin.set_input_observer([&](const Linear& l, const float* x, int64_t M) {
    EXPECT_EQ(l.name(), "model.layers.0.mlp.up_proj");
    rows += M;
    first = x[0];
  });
  const float x[6] = {7, 0, 0, 0, 1, 1};
  float y[4];
  lin.forward(x, 2, y);
  lin.forward(x + 3, 1, y);
  EXPECT_EQ(rows, 3);
  EXPECT_EQ(first, 0.0f);
  lin.set_input_observer({});
  lin.forward(x, 1, y);
  EXPECT_EQ(rows, 3);
}

TEST(NnDenseWeight, WidensBf16) {
  Tensor w = Tensor::from_vector({1.5f, -2.25f, 3.0f, 0.125f}, {2, 2}).to(DType::bf16);
  quant::DenseWeight d(w);
  EXPECT_EQ(d.dequantize().dtype(), DType::f32);
  EXPECT_FLOAT_EQ(d.dequantize().data<float>()[1], -2.25f);
  EXPECT_THROW(quant::DenseWeight(Tensor::zeros({4}, DType::f32)), Error);
}

}  // namespace
}  // namespace ao::nn

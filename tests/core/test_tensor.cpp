#include <gtest/gtest.h>

#include "ao/core/tensor.h"

using namespace ao;

namespace {
Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}
}  // namespace

TEST(CoreTensor, EmptyIsContiguousAndAligned) {
  Tensor t = Tensor::empty({3, 5, 7}, DType::bf16);
  EXPECT_EQ(t.numel(), 105);
  EXPECT_EQ(t.nbytes(), 210u);
  EXPECT_EQ(t.strides(), (Shape{35, 7, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kCpuAlignment, 0u);
  EXPECT_EQ(t.str(), "Tensor(bf16, [3, 5, 7], cpu)");
}

TEST(CoreTensor, ViewsShareStorage) {
  Tensor t = iota({4, 6});
  Tensor v = t.view({2, 12});
  EXPECT_EQ(v.storage(), t.storage());
  v.data<float>()[5] = -1.0f;
  EXPECT_EQ(t.data<float>()[5], -1.0f);
  EXPECT_EQ(t.view({-1, 3}).shape(), (Shape{8, 3}));
  EXPECT_THROW(t.view({5, 5}), Error);
  EXPECT_THROW(t.view({-1, -1}), Error);
  EXPECT_THROW(t.view({-1, 5}), Error);
}

TEST(CoreTensor, SliceSelectTranspose) {
  Tensor t = iota({4, 6});
  Tensor s = t.slice(1, 2, 5);  // columns 2..4
  EXPECT_EQ(s.shape(), (Shape{4, 3}));
  EXPECT_FALSE(s.is_contiguous());
  Tensor c = s.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), t.storage());
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(c.data<float>()[r * 3 + k], r * 6 + 2 + k);
  Tensor row = t.select(0, 2);
  EXPECT_EQ(row.shape(), (Shape{6}));
  EXPECT_EQ(row.data<float>()[0], 12.0f);
  Tensor tt = t.t();
  EXPECT_EQ(tt.shape(), (Shape{6, 4}));
  EXPECT_EQ(tt.strides(), (Shape{1, 6}));
  Tensor ttc = tt.contiguous();
  EXPECT_EQ(ttc.data<float>()[1 * 4 + 3], t.data<float>()[3 * 6 + 1]);
  // A slice of a transpose, made contiguous, has the right values too.
  Tensor st = tt.slice(0, 1, 3).slice(1, 1, 4).contiguous();
  EXPECT_EQ(st.shape(), (Shape{2, 3}));
  EXPECT_EQ(st.data<float>()[0], 7.0f);   // t[1][1]
  EXPECT_EQ(st.data<float>()[5], 20.0f);  // t[3][2]
  EXPECT_THROW(t.slice(1, 4, 7), Error);
  EXPECT_THROW(t.slice(2, 0, 1), Error);
  EXPECT_THROW(t.select(0, 4), Error);
  EXPECT_THROW(s.view({12}), Error);  // non-contiguous view must fail, reshape copies
  EXPECT_EQ(s.reshape({12}).data<float>()[3], 8.0f);
  EXPECT_EQ(t.size(-1), 6);
  EXPECT_THROW(t.size(2), Error);
}

TEST(CoreTensor, CloneAndConvert) {
  Tensor t = Tensor::from_vector({1.0f, -2.5f, 3.25f, 1e-3f}, {2, 2});
  Tensor c = t.clone();
  EXPECT_NE(c.storage(), t.storage());
  Tensor b = t.to(DType::bf16);
  EXPECT_EQ(b.dtype(), DType::bf16);
  Tensor back = b.to(DType::f32);
  EXPECT_EQ(back.data<float>()[1], -2.5f);
  EXPECT_NEAR(back.data<float>()[3], 1e-3f, 1e-5f);
  Tensor i = Tensor::from_vector({1.5f, 2.5f, -3.7f, 300.0f}, {4}).to(DType::i8);
  EXPECT_EQ(i.data<int8_t>()[0], 2);    // half to even
  EXPECT_EQ(i.data<int8_t>()[1], 2);
  EXPECT_EQ(i.data<int8_t>()[2], -4);
  EXPECT_EQ(i.data<int8_t>()[3], 127);  // saturates
  EXPECT_THROW(Tensor::from_vector({1, 2, 3}, {2, 2}), Error);
}

TEST(CoreTensor, PackedDtypes) {
  Tensor p = Tensor::empty({7}, DType::u4x2);
  EXPECT_EQ(p.nbytes(), 4u);
  EXPECT_EQ(dtype_storage_bytes(DType::f6_e2m3x4, 8), 6u);
  EXPECT_EQ(dtype_storage_bytes(DType::f6_e2m3x4, 5), 6u);
  EXPECT_THROW(dtype_size(DType::f4_e2m1x2), Error);
  EXPECT_THROW(p.slice(0, 0, 2), Error);
}

TEST(CoreTensor, CudaWithoutGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  try {
    Tensor::empty({4}, DType::f32, Device::cuda(0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_device("tpu"), Error);
  EXPECT_EQ(parse_device("cuda:1"), Device::cuda(1));
}

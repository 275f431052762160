// Every bulk quantize/dequantize path run twice on large random + edge inputs, once with the
// AVX2 kernels and once with the scalar reference: the bytes must be identical.
#include <cmath>
#include <functional>
#include <random>

#include "ao/formats/affine.h"
#include "ao/formats/float8_scaling.h"
#include "ao/formats/float_formats.h"
#include "ao/formats/mx.h"
#include "formats/fixture_util.h"

namespace ao::formats {
namespace {

using testing::same_vec;

constexpr int64_t kN = 48, kK = 1024;

// Rows cycle through normal, heavy-tailed, all-zero blocks, tiny, huge, NaN/Inf sprinkled.
std::vector<float> make_input(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.05f, 1.0f);
  std::vector<float> x(kN * kK);
  for (int64_t r = 0; r < kN; ++r)
    for (int64_t j = 0; j < kK; ++j) {
      float v = nd(rng);
      switch (r % 6) {
        case 1:
          v = v / ud(rng) * ((j % 97 == 0) ? 40.0f : 1.0f);
          break;
        case 2:
          v = ((j / 32) % 2 == 0) ? 0.0f : v;
          break;
        case 3:
          v *= 1e-39f;
          break;
        case 4:
          v *= 1e20f;
          break;
        case 5:
          v = (j % 101 == 7) ? NAN : (j % 103 == 9) ? -INFINITY : v * 3.0f;
          break;
        default:
          break;
      }
      x[r * kK + j] = v;
    }
  return x;
}

std::vector<uint8_t> as_bf16(const std::vector<float>& x) {
  std::vector<uint8_t> b(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t h = f32_to_bf16_rne(x[i]);
    std::memcpy(&b[2 * i], &h, 2);
  }
  return b;
}

// Runs fn with SIMD on and off; fn fills its output vector.
void expect_same(const char* what, const std::function<std::vector<uint8_t>()>& fn) {
  if (!formats_use_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  const auto fast = fn();
  set_formats_simd(false);
  const auto ref = fn();
  set_formats_simd(true);
  EXPECT_TRUE(same_vec(fast, ref)) << what;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

struct Inputs {
  std::vector<float> f32 = make_input(77);
  std::vector<uint8_t> bf16 = as_bf16(make_input(78));
  const void* ptr(DType t) const {
    return t == DType::f32 ? static_cast<const void*>(f32.data()) : bf16.data();
  }
};
const Inputs& inputs() {
  static const Inputs in;
  return in;
}

TEST(FormatSimd, Affine) {
  for (DType xd : {DType::f32, DType::bf16})
    for (int bits : {2, 4, 8})
      for (bool sgn : {true, false})
        for (MappingType m : {MappingType::symmetric, MappingType::asymmetric})
          for (Block b : {Block::per_row(kK), Block::per_group(32), Block::per_group(128)})
            expect_same("affine", [&] {
              const int64_t nb = check_block(kN, kK, b, "t");
              std::vector<float> s(nb);
              std::vector<int32_t> z(nb);
              const IntFormat f = int_format(bits, sgn);
              choose_qparams_affine(inputs().ptr(xd), xd, kN, kK, b, m, f, s.data(), z.data());
              std::vector<uint8_t> q(kN * kK), out(kN * kK * 4);
              quantize_affine(inputs().ptr(xd), xd, kN, kK, b, s.data(), xd, z.data(), f, q.data());
              dequantize_affine(q.data(), f, kN, kK, b, s.data(), z.data(), out.data(), xd);
              q.insert(q.end(), out.begin(), out.end());
              return q;
            });
}

TEST(FormatSimd, Float8) {
  for (DType xd : {DType::f32, DType::bf16})
    for (FloatFormat f : {FloatFormat::f8_e4m3fn, FloatFormat::f8_e5m2})
      for (Block b : {Block::per_tensor(kN, kK), Block::per_row(kK), Block{1, 128}, Block{16, 128}})
        expect_same("float8", [&] {
          const int64_t nb = check_block(kN, kK, b, "t");
          std::vector<float> s(nb), s2(nb);
          std::vector<uint8_t> q(kN * kK), q2(kN * kK), out(kN * kK * 4), out2(kN * kK * 4);
          float8_choose_scale(inputs().ptr(xd), xd, kN, kK, b, f, s.data());
          float8_quantize(inputs().ptr(xd), xd, kN, kK, b, f, s.data(), q.data());
          float8_dequantize(q.data(), kN, kK, b, f, s.data(), out.data(), xd);
          float8_training_scale(inputs().ptr(xd), xd, kN, kK, b, f, true, s2.data());
          float8_training_quantize(inputs().ptr(xd), xd, kN, kK, b, f, s2.data(), q2.data());
          float8_training_dequantize(q2.data(), kN, kK, b, f, s2.data(), out2.data(), DType::f32);
          auto all = bytes_of(s);
          for (const auto* v : {&q, &out, &q2, &out2}) all.insert(all.end(), v->begin(), v->end());
          auto sb = bytes_of(s2);
          all.insert(all.end(), sb.begin(), sb.end());
          return all;
        });
}

TEST(FormatSimd, MxAndNvfp4) {
  for (DType xd : {DType::f32, DType::bf16}) {
    for (FloatFormat e : {FloatFormat::f8_e4m3fn, FloatFormat::f8_e5m2, FloatFormat::f6_e2m3,
                          FloatFormat::f6_e3m2, FloatFormat::f4_e2m1})
      for (ScaleMode m : {ScaleMode::floor, ScaleMode::ceil, ScaleMode::even, ScaleMode::rceil})
        expect_same("mx", [&] {
          std::vector<uint8_t> q(mx_qdata_bytes(e, kN, kK)), s(kN * kK / 32), out(kN * kK * 4);
          mx_quantize(inputs().ptr(xd), xd, kN, kK, e, m, q.data(), s.data());
          mx_dequantize(q.data(), s.data(), kN, kK, e, out.data(), DType::f32);
          q.insert(q.end(), s.begin(), s.end());
          q.insert(q.end(), out.begin(), out.end());
          return q;
        });
    for (bool pts : {false, true})
      expect_same("nvfp4", [&] {
        const float p = nvfp4_per_tensor_scale(100.0f);
        std::vector<uint8_t> q(kN * kK / 2), s(kN * kK / 16), out(kN * kK * 4);
        nvfp4_quantize(inputs().ptr(xd), xd, kN, kK, pts ? &p : nullptr, q.data(), s.data());
        nvfp4_dequantize(q.data(), s.data(), kN, kK, pts ? &p : nullptr, out.data(), DType::f32);
        q.insert(q.end(), s.begin(), s.end());
        q.insert(q.end(), out.begin(), out.end());
        return q;
      });
  }
}

}  // namespace
}  // namespace ao::formats

// Every CUDA kernel against a scalar CPU reference written here: NMSE bound per op, sentinel
// guards around every output. Skipped without a GPU, but for the host-side argument checks.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <tuple>

#include "ao/core/error.h"
#include "ao/kernels/cuda/cublas_check.h"
#include "ao/kernels/cuda/gemm_dequant.h"
#include "ao/kernels/cuda/kernel_trace.h"
#include "cuda_test_util.h"

namespace ao::cuda::testing {
namespace {

// ---- CPU references ----------------------------------------------------------------------------

// Dequantized weights [N, K] per the device format (TorchAO numerics, NUMERICS.md).
std::vector<float> reference_dequant(const std::vector<float>& w, int64_t N, int64_t K,
                                     WeightFormat f, int g, bool per_tensor) {
  std::vector<float> out(w.size());
  float tensor_amax = 0.f;
  for (float v : w) tensor_amax = std::max(tensor_amax, std::fabs(v));
  for (int64_t n = 0; n < N; ++n) {
    const float* x = &w[n * K];
    float* o = &out[n * K];
    if (f == WeightFormat::bf16) {
      std::copy(x, x + K, o);
    } else if (f == WeightFormat::int8) {
      float mn = 0.f, mx = 0.f;
      for (int64_t k = 0; k < K; ++k) mn = std::min(mn, x[k]), mx = std::max(mx, x[k]);
      const float s = std::max(std::max(-mn, mx) / 127.5f, 1.1920929e-07f);
      const float inv = 1.f / s;
      for (int64_t k = 0; k < K; ++k)
        o[k] = std::min(std::max(std::nearbyint(x[k] * inv), -128.f), 127.f) * s;
    } else if (f == WeightFormat::int4) {
      for (int64_t k0 = 0; k0 < K; k0 += g) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < g; ++j) mn = std::min(mn, x[k0 + j]), mx = std::max(mx, x[k0 + j]);
        const float s = std::max(mx - mn, 1e-6f) / 15.f;
        const float zero = mn + 8.f * s;
        // q from the fp32 s and min; s and zero then stored in bf16 (TorchAO's Int4Tensor).
        const float sb = round_bf16(s), zb = round_bf16(zero);
        for (int j = 0; j < g; ++j) {
          const float q = std::min(std::max(std::nearbyint((x[k0 + j] - mn) / s), 0.f), 15.f);
          o[k0 + j] = (q - 8.f) * sb + zb;
        }
      }
    } else {
      float amax = 0.f;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
      if (per_tensor) amax = tensor_amax;
      const float s = amax > 0.f ? amax / 448.f : 1.f;
      for (int64_t k = 0; k < K; ++k)
        o[k] = e4m3_round(std::min(std::max(x[k] / s, -448.f), 448.f)) * s;
    }
  }
  return out;
}

// y [m, N] = x [m, K] deq [N, K]^T, summed in double.
std::vector<float> reference_matvec(const std::vector<float>& x, const std::vector<float>& deq,
                                    int m, int64_t N, int64_t K) {
  std::vector<float> y(m * N);
  for (int i = 0; i < m; ++i)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[i * K + k]) * deq[n * K + k];
      y[i * N + n] = static_cast<float>(acc);
    }
  return y;
}

// SwiGLU of the interleaved gate/up projections gu [m, N] (row 2j gate, 2j + 1 up) as the
// GEMV's swiglu epilogue rounds it: [m, N / 2].
std::vector<float> reference_swiglu(const std::vector<float>& gu, int m, int64_t N) {
  std::vector<float> h(m * N / 2);
  for (int i = 0; i < m; ++i)
    for (int64_t j = 0; j < N / 2; ++j) {
      const float g = round_bf16(gu[i * N + 2 * j]), u = round_bf16(gu[i * N + 2 * j + 1]);
      h[i * N / 2 + j] = round_bf16(round_bf16(g / (1.f + std::exp(-g))) * u);
    }
  return h;
}

// GEMV arguments for a bf16 input [m, K] and an f32 output [m, N].
GemvArgs f32_gemv_args(int m, const uint16_t* x, float* y) {
  GemvArgs a;
  a.m = m;
  a.x = x;
  a.output = GemvOutput::f32;
  a.y = y;
  return a;
}

struct QuantCase {
  WeightFormat format;
  int group;
  bool per_tensor;
  const char* name;
};

class CudaGemv : public ::testing::TestWithParam<QuantCase> {};

// Allocates and quantizes a device weight from bf16 values w [N, K].
struct TestWeight {
  DeviceWeight dw;
  std::unique_ptr<Guarded<uint8_t>> data, scale;
  // Rows stored at k_padded elements (0: K rounded up to gemv_k_align, what every kernel takes).
  TestWeight(const std::vector<uint16_t>& wb, int64_t N, int64_t K, const QuantCase& c,
             int64_t k_padded = 0) {
    dw.format = c.format;
    dw.n = N;
    dw.k = K;
    const int align = gemv_k_align(c.format);
    dw.k_padded = k_padded != 0 ? k_padded : (K + align - 1) / align * align;
    dw.group_size = c.format == WeightFormat::int4 ? c.group : 0;
    const size_t db = c.format == WeightFormat::bf16   ? N * dw.k_padded * 2
                      : c.format == WeightFormat::int4 ? N * dw.k_padded / 2
                                                       : N * dw.k_padded;
    data = std::make_unique<Guarded<uint8_t>>(db);
    const size_t sb = c.format == WeightFormat::int4
                          ? int4_scale_rows(N) * (dw.k_padded / c.group) * kInt4ScaleBytes
                          : N * 4;
    scale = std::make_unique<Guarded<uint8_t>>(sb);
    dw.data = data->get();
    dw.scale = scale->get();
    Guarded<uint16_t> src(wb);
    Guarded<float> amax(4);
    quantize_weight(src.get(), dw, c.per_tensor, amax.get(), nullptr);
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(data->guards_intact());
    EXPECT_TRUE(scale->guards_intact());
  }
};

// A random device weight [N, K] (bf16 values N(0, 0.05), seeded) in format c, with `deq`, the
// reference dequantization of those values.
struct RandomTestWeight : TestWeight {
  std::vector<float> deq;
  RandomTestWeight(int64_t N, int64_t K, const QuantCase& c, uint32_t seed, int64_t k_padded = 0)
      : RandomTestWeight(to_bf16(randn(N * K, seed, 0.05f)), N, K, c, k_padded) {}

 private:
  RandomTestWeight(const std::vector<uint16_t>& wb, int64_t N, int64_t K, const QuantCase& c,
                   int64_t k_padded)
      : TestWeight(wb, N, K, c, k_padded),
        deq(reference_dequant(from_bf16(wb), N, K, c.format, c.group, c.per_tensor)) {}
};

TEST_P(CudaGemv, QuantizeDequantizeMatchesReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 72, K = 1536;
  const RandomTestWeight tw(N, K, c, 1);
  Guarded<uint16_t> deq(N * tw.dw.k_padded);
  dequantize_weight(tw.dw, deq.get(), nullptr);
  auto got_p = from_bf16(deq.download());
  EXPECT_TRUE(deq.guards_intact());
  std::vector<float> got(N * K);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) got[n * K + k] = got_p[n * tw.dw.k_padded + k];
  auto ref = tw.deq;
  for (auto& v : ref) v = round_bf16(v);
  EXPECT_LT(nmse(got, ref), 1e-6) << c.name;
  if (c.format == WeightFormat::int4) {
    // The scale words' tile-major layout (int4_scale_index): row r, group gi at
    // [r / 16][gi][r % 16], bf16 s in the low half and zero in the high half; s = (max - min)
    // / 15 and zero = min + 8 s of the group's source values in fp32, each rounded to bf16 (bit
    // for bit); 1e-6 / 15 and 8 s in K's padding (1536 to 2048); the last tile's rows past N
    // (72 = 4.5 tiles) zero.
    const std::vector<float> src = from_bf16(to_bf16(randn(N * K, 1, 0.05f)));  // tw's values
    const int64_t G = tw.dw.k_padded / c.group;
    ASSERT_EQ(tw.dw.scale_bytes(), size_t(80 * G * 4));
    std::vector<uint32_t> sw(80 * G);
    ASSERT_EQ(cudaMemcpy(sw.data(), tw.dw.scale, tw.dw.scale_bytes(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    for (int64_t r = 0; r < 80; ++r)
      for (int64_t gi = 0; gi < G; ++gi) {
        const uint32_t word = sw[int4_scale_index(r, gi, G)];
        if (r >= N) {
          EXPECT_EQ(word, 0u) << r;
          continue;
        }
        float mn = 0.f, mx = 0.f;
        if (gi * c.group < K) {
          mn = INFINITY, mx = -INFINITY;
          for (int64_t k = gi * c.group; k < (gi + 1) * c.group; ++k)
            mn = std::min(mn, src[r * K + k]), mx = std::max(mx, src[r * K + k]);
        }
        const float s = std::max(mx - mn, 1e-6f) / 15.f, zero = mn + 8.f * s;
        EXPECT_EQ(word, uint32_t(f32_to_bf16(s)) | uint32_t(f32_to_bf16(zero)) << 16)
            << c.name << " row " << r << " group " << gi;
      }
  }
}

// The GEMV kernels a test can ask for through GemvTuning: the TMA kernel (gemv_tma.cuh: bf16,
// int8, int4 with groups of 128/256, sm_90), the int4 register-ring tensor-core kernel, the
// CUDA-core kernels.
enum class GemvPath { tma, mma, cuda_cores };
const char* path_name(GemvPath p) {
  return p == GemvPath::tma ? " tma" : p == GemvPath::mma ? " mma" : " cuda cores";
}
GemvTuning tuning_for(GemvPath p) {
  GemvTuning t;
  t.tma_bf16 = t.tma_int8 = t.tma_int4 = t.tma_fp8 = p == GemvPath::tma;
  t.tma_int8_shape_rule = t.tma_int4_shape_rule = false;  // every test shape
  t.tensor_cores = p != GemvPath::cuda_cores;
  return t;
}
bool device_has_tma() {
  int dev = 0, major = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 9;
}
// The formats the TMA kernel takes (bf16, int8, int4 with groups of 128/256), and those of them
// it decodes to fp16 (int8, int4).
bool takes_tma(const QuantCase& c) {  // (the fp8 cases are weight-only)
  return c.format == WeightFormat::bf16 || c.format == WeightFormat::int8 ||
         c.format == WeightFormat::fp8 || (c.format == WeightFormat::int4 && c.group >= 128);
}
// The largest batch at which the TMA kernel takes format c: 8 where it takes every batch
// (takes_tma), 4 for int4 in groups of 64 and 32 (the other groups in the mma's spare columns:
// at batch 1 on the integer tensor cores, at 2-4 on the fp16 decode), 0 where it takes none.
int tma_max_batch(const QuantCase& c) {
  if (takes_tma(c)) return 8;
  return c.format == WeightFormat::int4 && (c.group == 64 || c.group == 32) ? 4 : 0;
}
// Whether the TMA kernel decodes format c to fp16 at some batch (int8, fp8, int4 from batch 2).
bool takes_fp16_decode(const QuantCase& c) {
  return tma_max_batch(c) > 0 && c.format != WeightFormat::bf16;
}
// Asserts that the last gemv() ran the kernel path p asked for, where it takes format c (x fits
// shared memory in every test shape).
void expect_path(GemvPath p, const QuantCase& c, const std::string& what, int m) {
  // int4 on the v7 tensor-core kernel: groups of 128/256 at every batch, 32/64 at batch 1 (an
  // odd batch's last launch is its one-row rest: 3 = 2 + 1, 5 = 4 + 1); on the TMA kernel groups
  // of 32/64 at batches 1-4 (tma_max_batch), so at every batch: its launches are 4, 2 or 1 rows
  // (6 = 4 + 2, 7 = 4 + 2 + 1, 8 = 4 + 4 outside rope_kv).
  const bool int4_mma = c.format == WeightFormat::int4 && (c.group >= 128 || (m & 1));
  const bool tma = p == GemvPath::tma && device_has_tma() && tma_max_batch(c) > 0;
  const bool mma = tma || (p != GemvPath::cuda_cores && int4_mma);
  EXPECT_EQ(last_gemv_launch().tma, tma) << what << ": TMA kernel";
  EXPECT_EQ(last_gemv_launch().tensor_cores, mma) << what << ": tensor-core kernel";
}

// Every batch size, through every kernel path that takes the format.
TEST_P(CudaGemv, BatchesMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 203, K = 1536;
  const RandomTestWeight tw(N, K, c, 2);
  const auto& deq = tw.deq;
  TuningReset reset;
  for (GemvPath path : {GemvPath::tma, GemvPath::mma, GemvPath::cuda_cores}) {
    set_gemv_tuning(tuning_for(path));
    for (int m : {1, 2, 3, 4, 5, 8}) {
      const std::string what = std::string(c.name) + " m=" + std::to_string(m) + path_name(path);
      auto xb = to_bf16(randn(m * K, 10 + m));
      Guarded<uint16_t> dx(xb);
      Guarded<float> dy(m * N);
      gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
      expect_path(path, c, what, m);
      auto y = dy.download();
      EXPECT_TRUE(dy.guards_intact());
      const auto ref = reference_matvec(from_bf16(xb), deq, m, N, K);
      EXPECT_LT(nmse(y, ref), 1e-6) << what;
    }
  }
}

// The prefill GEMM of a quantized weight (DequantGemm): the weight dequantized to bf16 in chunks
// of rows, each chunk's GEMM writing its columns of y (row stride N). Against x . bf16(deq)^T in
// double, for the whole weight at once, 128-row chunks (8: the last of 104 rows) and balanced
// 256-row chunks (4: the last of 232), bf16 and f32 outputs; the guards around y catch a chunk
// written past its columns or rows.
TEST_P(CudaGemv, DequantGemmChunksMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 1000, K = 768;  // whole groups of 32, 128 and 256
  const int m = 37;
  const RandomTestWeight tw(N, K, c, 4);
  auto deq = tw.deq;
  for (auto& v : deq) v = round_bf16(v);  // the GEMM's operand: the bf16 copy
  const auto xb = to_bf16(randn(m * K, 21));
  const auto ref = reference_matvec(from_bf16(xb), deq, m, N, K);
  Guarded<uint16_t> dx(xb);
  cublasHandle_t h;
  AO_CUBLAS_CHECK(cublasCreate(&h));
  const DequantGemmTuning saved = dequant_gemm_tuning();
  const int64_t row_bytes = tw.dw.k_padded * 2;
  struct Case {
    int64_t chunk_bytes;
    int64_t rows, count;  // the plan expected (bf16 weights are never chunked)
  };
  for (const Case& k : {Case{0, N, 1}, Case{128 * row_bytes, 128, 8},
                        Case{300 * row_bytes, 256, 4}}) {
    set_dequant_gemm_tuning(DequantGemmTuning{k.chunk_bytes});
    const DequantChunks plan = plan_dequant_chunks(N, tw.dw.k_padded, k.chunk_bytes);
    EXPECT_EQ(plan.rows, k.rows);
    EXPECT_EQ(plan.count, k.count);
    DequantGemm g;
    g.reserve(tw.dw);
    // int4 of groups >= 64, int8 and fp8 multiply a bf16 y without the copy where the build and
    // the GPU have the fused GEMMs (Int4FusedGemmMatchesItsNumerics,
    // RowScaledFusedGemmMatchesItsNumerics); their f32 outputs still take the copy, allocated on
    // the first f32 call.
    const bool fused = c.format != WeightFormat::bf16 &&
                       (c.format != WeightFormat::int4 || c.group >= 64) && fused_gemm_available();
    EXPECT_EQ(g.fused(tw.dw), fused) << c.name;
    EXPECT_EQ(g.scratch_bytes(),
              c.format == WeightFormat::bf16 || fused ? 0 : size_t(k.rows * row_bytes));
    const std::string what = std::string(c.name) + " chunk rows " + std::to_string(k.rows);
    Guarded<float> y32(m * N);
    g.run(h, tw.dw, dx.get(), m, y32.get(), CUDA_R_32F, nullptr);
    EXPECT_LT(nmse(y32.download(), ref), 1e-9) << what;
    EXPECT_TRUE(y32.guards_intact()) << what;
    EXPECT_EQ(g.scratch_bytes(), c.format == WeightFormat::bf16 ? 0 : size_t(k.rows * row_bytes));
    Guarded<uint16_t> y16(m * N);
    g.run(h, tw.dw, dx.get(), m, y16.get(), CUDA_R_16BF, nullptr);
    // The fused GEMMs round int4's zero - 8 s (Int4FusedGemmMatchesItsNumerics: 3.1-4.0e-5) and
    // int8 / fp8's row scale to bf16.
    EXPECT_LT(nmse(from_bf16(y16.download()), ref), fused ? 1e-4 : 1e-5) << what;
    EXPECT_TRUE(y16.guards_intact()) << what;
  }
  set_dequant_gemm_tuning(saved);
  cublasDestroy(h);
}

// x [m, K] random bf16 values and y = x . W^T through g (bf16 output, guards checked).
std::pair<std::vector<float>, std::vector<float>> run_fused(DequantGemm& g, cublasHandle_t h,
                                                            const DeviceWeight& w, int m,
                                                            uint32_t seed,
                                                            const std::string& what) {
  const auto xb = to_bf16(randn(m * w.k, seed));
  Guarded<uint16_t> dx(xb), dy(m * w.n);
  g.run(h, w, dx.get(), m, dy.get(), CUDA_R_16BF, nullptr);
  EXPECT_TRUE(dy.guards_intact()) << what;
  return {from_bf16(xb), from_bf16(dy.download())};
}

// The fused prefill GEMMs' outputs y [m, N] (bf16 values) against x [m, K] . wf^T in double,
// wf the GEMM's own bf16 operand emulated on the host: each checked output (every row of the
// small shapes, ~250 rows of the large ones) within half a bf16 ulp plus the fp32 summation's
// bound. Returns how many are not (the first 3 reported).
int outputs_off_emulation(const std::vector<float>& y, const std::vector<float>& x,
                          const std::vector<float>& wf, int m, int64_t N, int64_t K,
                          const std::string& what) {
  int bad = 0;
  const int64_t step = std::max<int64_t>(1, N / 250);
  for (int i = 0; i < m; ++i)
    for (int64_t n = i % step; n < N; n += step) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        acc += double(x[i * K + k]) * wf[n * K + k];
        mag += std::fabs(double(x[i * K + k]) * wf[n * K + k]);
      }
      const double tol = std::fabs(acc) / 256 + mag * K * 6e-8;
      if (std::fabs(y[i * N + n] - acc) > tol && bad++ < 3)
        ADD_FAILURE() << what << " y[" << i << "][" << n << "] = " << y[i * N + n] << ", want "
                      << acc << " +- " << tol;
    }
  return bad;
}

// The fused int4 prefill GEMM (CUTLASS's mixed-input GEMM, mixed_input_gemm.h) against a host
// emulation of its numerics, read back from the device weight: W = bf16(u s + z) (one rounding,
// as measured: two roundings were 8x further off), z = bf16(fma(-8, s, zero)), products summed
// in fp32 (here in double), y rounded to bf16. Each output within half a bf16 ulp plus the fp32
// summation's bound; against TorchAO's exact (u - 8) s + zero, NMSE < 1e-4 (z's rounding: the
// copy path, which rounds (u - 8) s + zero once, stays under 1e-5). Groups 64-256, N not a multiple of 16
// (the tile-major scales' padding rows), batches 1 to 300 (both tile shapes), guards around y;
// the weights the kernel does not take (g32, K not a multiple of 64) keep the copy.
TEST(CudaDequantGemm, Int4FusedGemmMatchesItsNumerics) {
  AO_SKIP_WITHOUT_GPU();
  if (!fused_gemm_available()) GTEST_SKIP() << "this build or GPU has no fused GEMMs";
  cublasHandle_t h;
  AO_CUBLAS_CHECK(cublasCreate(&h));
  struct Shape {
    int64_t n, k, k_padded;  // k_padded 0: gemv_k_align's
    std::vector<int> groups, ms;
  };
  // llama-like shapes with K padded to 256 only (as the engine stores 1280 and 2304 on sm_90),
  // and batches that take both tile shapes (128 x 256 from 65 tiles of it: 4608 rows, m = 300).
  const Shape shapes[] = {{1000, 768, 0, {64, 128, 256}, {1, 37, 300}},
                          {4608, 1280, 1280, {128, 256}, {16, 300}},
                          {1280, 2304, 2304, {256}, {16, 77}}};
  for (const Shape& sh : shapes)
    for (int group : sh.groups) {
      const int64_t N = sh.n, K = sh.k;
      const QuantCase c{WeightFormat::int4, group, false, "int4"};
      const RandomTestWeight tw(N, K, c, 7 + group, sh.k_padded);
      const int64_t kp = tw.dw.k_padded, G = kp / group;
      std::vector<uint8_t> q(N * kp / 2);
      std::vector<uint32_t> words(tw.dw.scale_bytes() / 4);
      ASSERT_EQ(cudaMemcpy(q.data(), tw.dw.data, q.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(
          cudaMemcpy(words.data(), tw.dw.scale, tw.dw.scale_bytes(), cudaMemcpyDeviceToHost),
          cudaSuccess);
      std::vector<float> wf(N * K);  // the fused GEMM's operand
      for (int64_t r = 0; r < N; ++r)
        for (int64_t k = 0; k < K; ++k) {
          const uint32_t word = words[int4_scale_index(r, k / group, G)];
          const float sc = bf16_to_f32(static_cast<uint16_t>(word & 0xffff));
          const float zero = bf16_to_f32(static_cast<uint16_t>(word >> 16));
          const float z = round_bf16(std::fma(-8.f, sc, zero));
          const int u = (q[r * kp / 2 + k / 2] >> (4 * (k & 1))) & 15;
          wf[r * K + k] = round_bf16(std::fma(static_cast<float>(u), sc, z));
        }
      DequantGemm g;
      g.reserve(tw.dw);
      ASSERT_TRUE(g.fused(tw.dw));
      EXPECT_EQ(g.scratch_bytes(), 0u);
      EXPECT_EQ(g.plane_bytes(), size_t(2 * G * N * 2));  // N a multiple of 8
      for (int m : sh.ms) {
        const std::string what = "[" + std::to_string(N) + ", " + std::to_string(K) + "] g" +
                                 std::to_string(group) + " m=" + std::to_string(m);
        const auto [x, y] = run_fused(g, h, tw.dw, m, 40 + m, what);
        EXPECT_EQ(outputs_off_emulation(y, x, wf, m, N, K, what), 0) << what;
        // Run 295: 2.7e-6 against this emulation (y's own bf16 rounding; with u s and z rounded
        // separately, 2.2-2.7e-5), 2.0-4.2e-5 against TorchAO's exact values (z's rounding).
        const double e = nmse(y, reference_matvec(x, wf, m, N, K));
        const double ex = nmse(y, reference_matvec(x, tw.deq, m, N, K));
        std::printf("%s: NMSE %.3g against the emulation, %.3g against TorchAO's values\n",
                    what.c_str(), e, ex);
        EXPECT_LT(e, 5e-6) << what;
        EXPECT_LT(ex, 1e-4) << what;
      }
    }
  // Not taken: groups of 32, N not a multiple of 8 (they keep the bf16 copy).
  for (auto [group, n] : {std::pair{32, int64_t{64}}, std::pair{64, int64_t{100}}}) {
    const RandomTestWeight tw(n, 768, QuantCase{WeightFormat::int4, group, false, "int4"}, 3);
    DequantGemm g;
    g.reserve(tw.dw);
    EXPECT_FALSE(g.fused(tw.dw)) << group << " " << n;
    EXPECT_GT(g.scratch_bytes(), 0u);
  }
  // The tuning switch turns it off.
  const DequantGemmTuning saved = dequant_gemm_tuning();
  DequantGemmTuning off = saved;
  off.fused = false;
  set_dequant_gemm_tuning(off);
  {
    const RandomTestWeight tw(64, 256, QuantCase{WeightFormat::int4, 128, false, "int4"}, 5);
    DequantGemm g;
    g.reserve(tw.dw);
    EXPECT_FALSE(g.fused(tw.dw));
  }
  set_dequant_gemm_tuning(saved);
  cublasDestroy(h);
}

// The fused prefill GEMM of int8 and weight-only fp8 weights (per row and per tensor) against a
// host emulation read back from the device weight: W = bf16(q bf16(s)) (q the int8 value or the
// e4m3 byte's value, s the row's f32 scale rounded to bf16), products summed in fp32 (here in
// double), y rounded to bf16: each output within half a bf16 ulp plus the fp32 summation's
// bound, guards around y; against q s with the f32 scale (the copy path's operand before its
// bf16 rounding), NMSE < 3e-5. Both tile shapes ([4608, 1280] at m = 300 takes 128 x 256).
TEST(CudaDequantGemm, RowScaledFusedGemmMatchesItsNumerics) {
  AO_SKIP_WITHOUT_GPU();
  if (!fused_gemm_available()) GTEST_SKIP() << "this build or GPU has no fused GEMMs";
  cublasHandle_t h;
  AO_CUBLAS_CHECK(cublasCreate(&h));
  // e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities (NaN never written).
  auto e4m3 = [](uint8_t b) {
    const int e = (b >> 3) & 15, mant = b & 7;
    const float v = e == 0 ? std::ldexp(static_cast<float>(mant), -9)
                           : std::ldexp(1.f + mant / 8.f, e - 7);
    return (b & 0x80) ? -v : v;
  };
  const QuantCase cases[] = {{WeightFormat::int8, 0, false, "int8"},
                             {WeightFormat::fp8, 0, false, "fp8_row"},
                             {WeightFormat::fp8, 0, true, "fp8_tensor"}};
  struct Shape {
    int64_t n, k;
    std::vector<int> ms;
  };
  for (const QuantCase& c : cases)
    for (const Shape& sh : {Shape{1000, 768, {1, 37}}, Shape{4608, 1280, {300}}}) {
      const int64_t N = sh.n, K = sh.k;
      const RandomTestWeight tw(N, K, c, 11);
      const int64_t kp = tw.dw.k_padded;
      std::vector<uint8_t> q(N * kp);
      std::vector<float> sc(N);
      ASSERT_EQ(cudaMemcpy(q.data(), tw.dw.data, q.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(sc.data(), tw.dw.scale, N * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      std::vector<float> wf(N * K), wx(N * K);  // the fused GEMM's operand; q s in f32
      for (int64_t r = 0; r < N; ++r)
        for (int64_t k = 0; k < K; ++k) {
          const uint8_t b = q[r * kp + k];
          const float v = c.format == WeightFormat::int8 ? static_cast<float>(static_cast<int8_t>(b))
                                                         : e4m3(b);
          wf[r * K + k] = round_bf16(v * round_bf16(sc[r]));
          wx[r * K + k] = v * sc[r];
        }
      DequantGemm g;
      g.reserve(tw.dw);
      ASSERT_TRUE(g.fused(tw.dw)) << c.name;
      EXPECT_EQ(g.scratch_bytes(), 0u);
      EXPECT_EQ(g.plane_bytes(), size_t(N * 2));  // N a multiple of 8
      for (int m : sh.ms) {
        const std::string what = std::string(c.name) + " [" + std::to_string(N) + ", " +
                                 std::to_string(K) + "] m=" + std::to_string(m);
        const auto [x, y] = run_fused(g, h, tw.dw, m, 60 + m, what);
        EXPECT_EQ(outputs_off_emulation(y, x, wf, m, N, K, what), 0) << what;
        const double e = nmse(y, reference_matvec(x, wf, m, N, K));
        const double ex = nmse(y, reference_matvec(x, wx, m, N, K));
        std::printf("%s: NMSE %.3g against the emulation, %.3g against q s in f32\n",
                    what.c_str(), e, ex);
        // Run 302: 2.5-2.8e-6 (y's own bf16 rounding) and 2.8-9.6e-6 (the scale's rounding).
        EXPECT_LT(e, 5e-6) << what;
        EXPECT_LT(ex, 3e-5) << what;
      }
    }
  cublasDestroy(h);
}

// plan_dequant_chunks (host only): llama3-8b's gate_up at 24 MB is 10 chunks of 2944 rows.
TEST(CudaDequantGemm, PlansBalancedChunksOf128Rows) {
  const int64_t mb = int64_t{1} << 20;
  auto plan = plan_dequant_chunks(28672, 4096, 24 * mb);
  EXPECT_EQ(plan.rows, 2944);
  EXPECT_EQ(plan.count, 10);
  EXPECT_LE(plan.rows * 4096 * 2, 24 * mb);
  plan = plan_dequant_chunks(28672, 4096, 0);  // the whole weight
  EXPECT_EQ(plan.rows, 28672);
  EXPECT_EQ(plan.count, 1);
  plan = plan_dequant_chunks(4096, 4096, 32 * mb);  // fits exactly
  EXPECT_EQ(plan.count, 1);
  plan = plan_dequant_chunks(4096, 14336, 4 * mb);  // below 128 rows: 128-row chunks
  EXPECT_EQ(plan.rows, 128);
  EXPECT_EQ(plan.count, 32);
  plan = plan_dequant_chunks(100, 64, 1);  // fewer rows than one chunk's minimum
  EXPECT_EQ(plan.rows, 100);
  EXPECT_EQ(plan.count, 1);
  EXPECT_THROW(plan_dequant_chunks(0, 64, mb), Error);
}

TEST_P(CudaGemv, FusedRmsnormSwigluResidualEpilogues) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 130, K = 1024;
  const RandomTestWeight tw(N, K, c, 3);
  const auto& deq = tw.deq;
  auto dot = [&](const std::vector<float>& xn, int m, int64_t n) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += static_cast<double>(xn[m * K + k]) * deq[n * K + k];
    return static_cast<float>(s);
  };
  for (int m : {1, 2}) {
    // RMSNorm prologue, bf16 output.
    auto resid = randn(m * K, 20 + m, 3.f);
    const auto nw = norm_weight_bf16(K, 30);
    const auto xn = reference_rmsnorm(resid, m, K, nw);
    Guarded<float> dres(resid);
    Guarded<uint16_t> dnw(nw);
    Guarded<uint16_t> dy(m * N);
    const GemvArgs a = rmsnorm_gemv_args(m, dres.get(), dnw.get(), GemvOutput::bf16, dy.get());
    gemv(tw.dw, a, nullptr);
    auto y = from_bf16(dy.download());
    EXPECT_TRUE(dy.guards_intact());
    std::vector<float> ref(m * N);
    for (int i = 0; i < m; ++i)
      for (int64_t n = 0; n < N; ++n) ref[i * N + n] = dot(xn, i, n);
    EXPECT_LT(nmse(y, ref), 2e-5) << c.name << " rmsnorm m=" << m;

    // SwiGLU epilogue (rows interleave gate and up) after the RMSNorm prologue.
    Guarded<uint16_t> dh(m * N / 2);
    GemvArgs b = a;
    b.output = GemvOutput::swiglu;
    b.y = dh.get();
    gemv(tw.dw, b, nullptr);
    auto hgot = from_bf16(dh.download());
    EXPECT_TRUE(dh.guards_intact());
    EXPECT_LT(nmse(hgot, reference_swiglu(ref, m, N)), 2e-5) << c.name << " swiglu m=" << m;

    // Residual-add epilogue.
    auto xb = to_bf16(randn(m * K, 40 + m, 2.f));
    auto xf = from_bf16(xb);
    auto r0 = randn(m * N, 50 + m);
    Guarded<uint16_t> dx(xb);
    Guarded<float> dr(r0);
    GemvArgs d;
    d.m = m;
    d.x = dx.get();
    d.output = GemvOutput::add_residual;
    d.y = dr.get();
    gemv(tw.dw, d, nullptr);
    auto r = dr.download();
    EXPECT_TRUE(dr.guards_intact());
    for (int i = 0; i < m; ++i)
      for (int64_t n = 0; n < N; ++n) ref[i * N + n] = r0[i * N + n] + round_bf16(dot(xf, i, n));
    EXPECT_LT(nmse(r, ref), 2e-5) << c.name << " residual m=" << m;
  }
}

// The CUDA-core kernel's persistent tile schedule: more tiles than resident blocks (several
// rounds), K = 4096 so every K split (1, 2, 4 warps per row group) is eligible; f32 output and
// the paired SwiGLU epilogue (row pairs must stay in one row group).
TEST_P(CudaGemv, KSplitTileSchedulesMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 4600, K = 4096;
  const RandomTestWeight tw(N, K, c, 4);
  const auto& deq = tw.deq;
  TuningReset reset;
  const auto nw = norm_weight_bf16(K, 70);
  Guarded<uint16_t> dnw(nw);
  for (int m : {1, 2}) {
    // Plain bf16 input, f32 output.
    auto xb = to_bf16(randn(m * K, 60 + m));
    const auto ref = reference_matvec(from_bf16(xb), deq, m, N, K);
    // RMSNorm prologue + SwiGLU epilogue (rows 2j, 2j + 1 must meet in one warp's epilogue).
    const auto resid = randn(m * K, 80 + m, 3.f);
    const auto href =
        reference_swiglu(reference_matvec(reference_rmsnorm(resid, m, K, nw), deq, m, N, K), m, N);
    Guarded<uint16_t> dx(xb);
    Guarded<float> dres(resid);
    for (int ks : {1, 2, 4}) {
      GemvTuning t = tuning_for(GemvPath::cuda_cores);
      t.k_split = ks;
      set_gemv_tuning(t);
      const std::string what =
          std::string(c.name) + " m=" + std::to_string(m) + " k_split=" + std::to_string(ks);
      Guarded<float> dy(m * N);
      gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
      EXPECT_FALSE(last_gemv_launch().tensor_cores) << what;
      EXPECT_EQ(last_gemv_launch().k_split, ks) << what << ": the split did not run";
      EXPECT_LT(nmse(dy.download(), ref), 1e-6) << what;
      EXPECT_TRUE(dy.guards_intact()) << what;
      Guarded<uint16_t> dh(m * N / 2);
      gemv(tw.dw, rmsnorm_gemv_args(m, dres.get(), dnw.get(), GemvOutput::swiglu, dh.get()),
           nullptr);
      EXPECT_EQ(last_gemv_launch().k_split, ks) << what << " swiglu: the split did not run";
      EXPECT_LT(nmse(from_bf16(dh.download()), href), 2e-5) << what << " swiglu";
      EXPECT_TRUE(dh.guards_intact()) << what;
    }
  }
}

// The TMA ring tests' shapes: 4600 x 4096 (288 tiles: 2-3 per block on the card's SMs) at
// batches 1..max_m, 300 x 14336 (19 tiles of K in 7 chunks) at batch 1, 2200 x 1024 (138 tiles) at
// batches 1-2 (none above tma_max_batch). Calls fn(weight, RMSNorm weight, its device copy, N,
// K, m, label) for each.
template <class Fn>
void for_each_ring_shape(const QuantCase& c, int seed, int max_m, Fn&& fn) {
  struct Shape {
    int64_t n, k;
    int max_m;
  };
  for (const Shape sh : {Shape{4600, 4096, max_m}, Shape{300, 14336, 1}, Shape{2200, 1024, 2}}) {
    const RandomTestWeight tw(sh.n, sh.k, c, seed);
    const auto nw = norm_weight_bf16(sh.k, 66 + seed);
    Guarded<uint16_t> dnw(nw);
    for (int m = 1; m <= std::min(sh.max_m, tma_max_batch(c)); ++m)
      fn(tw, nw, dnw.get(), sh.n, sh.k, m,
         std::string(c.name) + " " + std::to_string(sh.n) + "x" + std::to_string(sh.k) +
             " m=" + std::to_string(m));
  }
}

// Weight tw [N, K] at batch m on the TMA kernel (under the tuning in force), with f32 output and
// with RMSNorm + SwiGLU, each against the reference with sentinel guards (x from seed + m, the
// residual from seed + 10 + m); returns the f32 launch's record.
GemvLaunch expect_tma_f32_and_swiglu(const QuantCase& c, const RandomTestWeight& tw,
                                     const std::vector<uint16_t>& nw, const uint16_t* dnw,
                                     int64_t N, int64_t K, int m, int seed,
                                     const std::string& what) {
  auto xb = to_bf16(randn(m * K, seed + m));
  Guarded<uint16_t> dx(xb);
  Guarded<float> dy(m * N);
  gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
  expect_path(GemvPath::tma, c, what, m);
  const GemvLaunch launch = last_gemv_launch();
  EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(xb), tw.deq, m, N, K)), 1e-6) << what;
  EXPECT_TRUE(dy.guards_intact()) << what;
  const auto resid = randn(m * K, seed + 10 + m, 3.f);
  const auto href = reference_swiglu(
      reference_matvec(reference_rmsnorm(resid, m, K, nw), tw.deq, m, N, K), m, N);
  Guarded<float> dres(resid);
  Guarded<uint16_t> dh(m * N / 2);
  gemv(tw.dw, rmsnorm_gemv_args(m, dres.get(), dnw, GemvOutput::swiglu, dh.get()), nullptr);
  expect_path(GemvPath::tma, c, what + " swiglu", m);
  EXPECT_LT(nmse(from_bf16(dh.download()), href), 2e-5) << what << " swiglu";
  EXPECT_TRUE(dh.guards_intact()) << what;
  return launch;
}

// The TMA kernel's ring of shared-memory stages running on across tiles: more tiles than SMs
// (several rounds per block, the ring wrapping many times), chunks of 1024 and 512 bytes, a K of
// 14336 (the down projection's: 7 chunks per tile); f32 output and RMSNorm + SwiGLU.
TEST_P(CudaGemv, TmaRingAcrossTilesMatchesReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) == 0) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  set_gemv_tuning(tuning_for(GemvPath::tma));
  for_each_ring_shape(
      c, 6, 2,
      [&](const RandomTestWeight& tw, const std::vector<uint16_t>& nw, const uint16_t* dnw,
          int64_t N, int64_t K, int m, const std::string& what) {
        expect_tma_f32_and_swiglu(c, tw, nw, dnw, N, K, m, 110, what);
      });
}

// Rows whose bytes are 2^k times an odd factor (llama2-7b's down projection, K = 11008; and
// K = 18944, Qwen2.5-7B's) have no multiple of 512 bytes that streams at rate: the
// plan then takes a chunk of at least 1.5 KB that is a multiple of 64 bytes
// (GemvTuning::tma_chunk_any_divisor, lab note 87). Both plans match the reference, f32 output
// and RMSNorm + SwiGLU.
TEST_P(CudaGemv, TmaChunksOfAnyMultipleOf64MatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c) || !device_has_tma()) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  for (const int64_t K : {int64_t{11008}, int64_t{18944}}) {
    const int64_t N = 300;
    const RandomTestWeight tw(N, K, c, 71);
    const auto nw = norm_weight_bf16(K, 72);
    Guarded<uint16_t> dnw(nw);
    for (const bool any : {true, false}) {
      GemvTuning t = tuning_for(GemvPath::tma);
      t.tma_chunk_any_divisor = any;
      set_gemv_tuning(t);
      for (int m = 1; m <= (K == 11008 ? 2 : 1); ++m) {  // x must fit beside the ring
        const std::string what = std::string(c.name) + " K=" + std::to_string(K) +
                                 " m=" + std::to_string(m) + (any ? " any chunk" : " chunk512");
        const GemvLaunch launch = expect_tma_f32_and_swiglu(c, tw, nw, dnw.get(), N, K, m, 73, what);
        const int chunk = launch.chunk;
        ASSERT_GT(chunk, 0) << what;
        // Tiles per barrier: 4, int4 8 (4 at batch 2: its partial sums within 16 KB); int4's
        // batch-1 digits of K = 18944 (3 bytes per k, 58 KB) fit beside the ring only with 2
        // tiles' partial sums (GemvTuning::tma_tile_group_fits_x, lab note 91).
        const int tiles = c.format != WeightFormat::int4 ? 4 : K == 18944 ? 2 : m == 1 ? 8 : 4;
        EXPECT_EQ(launch.tiles_per_barrier, tiles) << what;
        const auto row_bytes = static_cast<int64_t>(tw.dw.bytes() - tw.dw.scale_bytes()) / N;
        EXPECT_EQ(row_bytes % chunk, 0) << what << ": chunk " << chunk;
        if (any) {
          EXPECT_NE(chunk % 512, 0) << what << ": chunk " << chunk;
          EXPECT_GE(chunk, 1536) << what;
        } else {
          EXPECT_EQ(chunk % 512, 0) << what << ": chunk " << chunk;
        }
      }
    }
  }
}

// int4 weights that the TMA kernel takes at every batch 1-8 are stored at K rounded up to 256
// elements, not 1024 (gemv_padded_k, lab note 90: Qwen2.5-7B's K = 3584 read as 4096 before).
// Stored so, they run on the TMA kernel at every batch under the default tuning (its shape rule
// does not apply to them) and match the reference with f32 output and RMSNorm + SwiGLU; with
// GemvTuning::tma_int4_pad_256 off they keep 1024; where a later tuning leaves them no TMA plan,
// gemv() refuses them with an error that names why.
TEST_P(CudaGemv, Int4RowsPaddedTo256MatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (c.format != WeightFormat::int4) GTEST_SKIP() << c.name << " is not int4";
  TuningReset reset;
  const bool tma = device_has_tma() && takes_tma(c);
  EXPECT_EQ(gemv_padded_k(c.format, 600, 3584, c.group), tma ? 3584 : 4096) << c.name;
  // g256: 5 (and at K = 4352, 17) groups per row, an odd count (taken since the scales are
  // tile-major: one copy per stage of any group count, lab note 91).
  EXPECT_EQ(gemv_padded_k(c.format, 600, 1280, c.group), tma ? 1280 : 2048) << c.name;
  EXPECT_EQ(gemv_padded_k(c.format, 600, 4096, c.group), 4096) << c.name;
  // Batch 8's x of K = 18944 does not fit beside the ring: the register-ring kernel's padding.
  EXPECT_EQ(gemv_padded_k(c.format, 600, 18944, c.group), 19456) << c.name;
  GemvTuning before;
  before.tma_int4_pad_256 = false;
  set_gemv_tuning(before);
  EXPECT_EQ(gemv_padded_k(c.format, 600, 3584, c.group), 4096) << c.name;
  set_gemv_tuning({});
  if (!tma) GTEST_SKIP() << c.name << " keeps rows of 1024 elements here";
  EXPECT_EQ(gemv_padded_k(c.format, 600, 4352, c.group), 4352) << c.name;
  // K = 4352: stage rows padded by 64 bytes (K >= 4096: GemvTuning::tma_pad_rows_int4_min_k).
  for (const int64_t K : {int64_t{3584}, int64_t{1280}, int64_t{4352}}) {
    const int64_t Kp = gemv_padded_k(c.format, 600, K, c.group);
    if (Kp % 1024 == 0) continue;
    const int64_t N = 600;
    const RandomTestWeight tw(N, K, c, 131, Kp);
    const auto nw = norm_weight_bf16(K, 132);
    Guarded<uint16_t> dnw(nw);
    for (int m = 1; m <= 8; ++m)
      expect_tma_f32_and_swiglu(c, tw, nw, dnw.get(), N, K, m, 133,
                                std::string(c.name) + " K=" + std::to_string(K) + " stored at " +
                                    std::to_string(Kp) + " m=" + std::to_string(m));
    // No TMA plan under a later tuning: refused, not read as rows of 1024.
    GemvTuning no_tma;
    no_tma.tma_int4 = false;
    set_gemv_tuning(no_tma);
    Guarded<uint16_t> dx(to_bf16(randn(K, 134)));
    Guarded<float> dy(N);
    try {
      gemv(tw.dw, f32_gemv_args(1, dx.get(), dy.get()), nullptr);
      ADD_FAILURE() << c.name << ": a weight stored at K = " << Kp << " ran off the TMA kernel";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("only the TMA kernel takes"), std::string::npos)
          << e.what();
    }
    set_gemv_tuning({});
  }
}

// Weight w [N, K] at batch 1 on the TMA kernel under tuning t, f32 output from bf16 x, the
// GemvArgs changed by `edit` first; checks the path and the guards and returns y.
template <class Edit>
std::vector<float> tma_f32(const QuantCase& c, const DeviceWeight& w, const uint16_t* x, int64_t N,
                           const GemvTuning& t, Edit&& edit, const std::string& what) {
  set_gemv_tuning(t);
  Guarded<float> dy(N);
  GemvArgs a = f32_gemv_args(1, x, dy.get());
  edit(a);
  gemv(w, a, nullptr);
  expect_path(GemvPath::tma, c, what, 1);
  EXPECT_TRUE(dy.guards_intact()) << what;
  return dy.download();
}

// GemvArgs::max_blocks (the decode step's o projection, GemvTuning::decode_o_blocks and
// decode_o_spare_sms_int4) and GemvTuning::tma_balanced_grid set the TMA kernel's grid and change
// no result: each tile's sums do not depend on the block that takes it.
TEST_P(CudaGemv, TmaGridCapChangesNoResult) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) == 0 || !device_has_tma())
    GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  const int64_t N = 4600, K = 4096;  // 288 tiles
  const RandomTestWeight tw(N, K, c, 91);
  auto xb = to_bf16(randn(K, 92));
  Guarded<uint16_t> dx(xb);
  auto run = [&](int max_blocks, bool balanced) {
    GemvTuning t = tuning_for(GemvPath::tma);
    t.tma_balanced_grid = balanced;
    auto y = tma_f32(c, tw.dw, dx.get(), N, t, [&](GemvArgs& a) { a.max_blocks = max_blocks; },
                     std::string(c.name) + " grid");
    return std::make_pair(last_gemv_launch().grid, std::move(y));
  };
  const auto [g0, y0] = run(0, false);
  EXPECT_LT(nmse(y0, reference_matvec(from_bf16(xb), tw.deq, 1, N, K)), 1e-6) << c.name;
  const auto [g7, y7] = run(7, false);
  EXPECT_EQ(g7, 7) << c.name;
  EXPECT_EQ(y7, y0) << c.name << ": 7 blocks";
  // 288 tiles on 100 blocks take 3 rounds, as on 96 blocks.
  const auto [gb, yb] = run(100, true);
  EXPECT_EQ(gb, 96) << c.name;
  EXPECT_EQ(yb, y0) << c.name << ": balanced grid";
  EXPECT_THROW(run(-1, false), Error) << c.name;
}

// GemvArgs::next with GemvTuning::tma_prefetch_next_bytes: the bf16 kernel's blocks ask the L2
// to prefetch the head of the next weight once their own copies have landed. The launch record
// says how many bytes: the size asked, to 16 bytes, for part of the next weight; all of it (data
// and scales, GemvArgs::next's bytes()) when more is asked; none for the formats that decode or
// without a next weight. A prefetch changes no result: the outputs equal those without it bit
// for bit, for a next weight of the same and of another format, and f32 and RMSNorm + SwiGLU
// outputs; the next weight is then used as it is (its own GEMV still matches).
TEST_P(CudaGemv, TmaPrefetchOfTheNextWeightChangesNoResult) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c)) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  const int64_t N = 4600, K = 4096;
  const RandomTestWeight tw(N, K, c, 31);
  const RandomTestWeight next_same(3000, K, c, 32);
  const RandomTestWeight next_bf16(2000, K, QuantCase{WeightFormat::bf16, 0, false, "bf16"}, 33);
  const auto nw = norm_weight_bf16(K, 34);
  Guarded<uint16_t> dnw(nw);
  auto xb = to_bf16(randn(K, 35));
  Guarded<uint16_t> dx(xb);
  Guarded<float> dres(randn(K, 36, 3.f));
  auto run = [&](const DeviceWeight* next, int64_t bytes) {
    GemvTuning t = tuning_for(GemvPath::tma);
    t.tma_prefetch_next_bytes = bytes;
    const std::string what = std::string(c.name) + " next " + std::to_string(next ? next->n : 0) +
                             " bytes " + std::to_string(bytes);
    auto y = tma_f32(c, tw.dw, dx.get(), N, t, [&](GemvArgs& a) { a.next = next; }, what);
    const int64_t asked = last_gemv_launch().prefetch_bytes;
    if (c.format != WeightFormat::bf16 || next == nullptr || bytes == 0) {
      EXPECT_EQ(asked, 0) << what;
    } else if (bytes >= static_cast<int64_t>(next->bytes())) {
      const auto sc = static_cast<int64_t>(next->scale_bytes());
      EXPECT_EQ(asked, (static_cast<int64_t>(next->bytes()) - sc) / 16 * 16 + sc / 16 * 16) << what;
    } else {
      EXPECT_LE(asked, bytes) << what;
      EXPECT_GT(asked, bytes - 64) << what;
    }
    Guarded<uint16_t> dh(N / 2);
    GemvArgs a = rmsnorm_gemv_args(1, dres.get(), dnw.get(), GemvOutput::swiglu, dh.get());
    a.next = next;
    gemv(tw.dw, a, nullptr);
    EXPECT_TRUE(dh.guards_intact());
    return std::make_pair(std::move(y), dh.download());
  };
  const auto base = run(nullptr, 0);
  EXPECT_LT(nmse(base.first, reference_matvec(from_bf16(xb), tw.deq, 1, N, K)), 1e-6);
  for (const RandomTestWeight* nx : {&next_same, &next_bf16})
    for (const int64_t bytes : {int64_t{1} << 20, int64_t{1} << 34}) {
      const auto got = run(&nx->dw, bytes);
      EXPECT_EQ(got.first, base.first) << c.name << " next " << nx->dw.n << " bytes " << bytes;
      EXPECT_EQ(got.second, base.second) << c.name << " swiglu, next " << nx->dw.n;
    }
  set_gemv_tuning(tuning_for(GemvPath::tma));
  Guarded<float> dy(3000);
  gemv(next_same.dw, f32_gemv_args(1, dx.get(), dy.get()), nullptr);
  EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(xb), next_same.deq, 1, 3000, K)), 1e-6);
}

// GemvTuning::tma_tile_group: 2, 4 or 8 tiles of a block per tile-end barrier and epilogue. The
// sums are the same in the same order, so the output must equal one tile per barrier's bit for
// bit: blocks whose tile count is not a multiple of the group (288 tiles on the grid of the
// card's SMs), one tile per block (19 tiles of K = 14336 in chunks), batches 1-3 (from 2, a group
// of 8 is cut to what fits), and f32 and RMSNorm + SwiGLU outputs. Padded stage rows
// (GemvTuning::tma_pad_rows) must likewise change nothing.
TEST_P(CudaGemv, TmaTileGroupsMatchOneTilePerBarrier) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) == 0) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  // Tile groups of 1, 2, 4, 8 without padded stage rows; then 1 and 8 with them
  // (GemvTuning::tma_pad_rows and tma_pad_rows_byte_max_k: one copy per row, the same sums).
  constexpr int kVariants = 6;
  GemvTuning tunings[kVariants];
  for (int i = 0; i < kVariants; ++i) {
    tunings[i] = tuning_for(GemvPath::tma);
    tunings[i].tma_tile_group = tunings[i].tma_tile_group_int4 = i < 4 ? 1 << i : i == 4 ? 1 : 8;
    tunings[i].tma_pad_rows = i < 4 ? 0 : 0xf;
    tunings[i].tma_pad_rows_byte_max_k = 0;
  }
  for_each_ring_shape(
      c, 16, 3,
      [&](const RandomTestWeight& tw, const std::vector<uint16_t>&, const uint16_t* dnw, int64_t N,
          int64_t K, int m, const std::string& what) {
        auto xb = to_bf16(randn(m * K, 210 + m));
        Guarded<uint16_t> dx(xb);
        const auto resid = randn(m * K, 220 + m, 3.f);
        Guarded<float> dres(resid);
        std::vector<float> y[kVariants];
        std::vector<uint16_t> h[kVariants];
        for (int i = 0; i < kVariants; ++i) {
          set_gemv_tuning(tunings[i]);
          Guarded<float> dy(m * N);
          gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
          expect_path(GemvPath::tma, c, what, m);
          y[i] = dy.download();
          EXPECT_TRUE(dy.guards_intact()) << what;
          Guarded<uint16_t> dh(m * N / 2);
          gemv(tw.dw, rmsnorm_gemv_args(m, dres.get(), dnw, GemvOutput::swiglu, dh.get()), nullptr);
          h[i] = dh.download();
          EXPECT_TRUE(dh.guards_intact()) << what << " swiglu";
        }
        for (int i = 1; i < kVariants; ++i) {
          EXPECT_EQ(y[0], y[i]) << what << " variant " << i;
          EXPECT_EQ(h[0], h[i]) << what << " swiglu, variant " << i;
        }
        EXPECT_LT(nmse(y[1], reference_matvec(from_bf16(xb), tw.deq, m, N, K)), 1e-6) << what;
      });
}

// The TMA kernel's fp16 decode (int8, int4) stages x as fp16 under a power-of-two scale per row
// chosen from the row's max |x|: rows far outside fp16's range (1e30; 1e-36, whose scale would
// pass 2^126 and is clamped), a row spanning 12 decades, an all-zero row (scale 1, output
// exactly 0) and one with a single nonzero entry, each against the reference in one launch, with
// the conversion pass and with the direct fp16 staging (GemvTuning::tma_direct_fp16).
TEST_P(CudaGemv, TmaFp16DecodeScalesEachRowOfX) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_fp16_decode(c)) GTEST_SKIP() << c.name << " does not take the fp16 decode";
  TuningReset reset;
  const int64_t N = 520, K = 2048;
  const int m = 5;
  const RandomTestWeight tw(N, K, c, 8);
  auto x = randn(m * K, 140);
  for (int64_t k = 0; k < K; ++k) {
    x[0 * K + k] *= 1e30f;
    x[1 * K + k] *= 1e-36f;
    x[2 * K + k] *= std::pow(10.f, static_cast<float>(k % 13) - 8.f);  // 1e-8 .. 1e4
    x[3 * K + k] = 0.f;
    x[4 * K + k] = k == 777 ? -3.5f : 0.f;
  }
  auto xb = to_bf16(x);
  Guarded<uint16_t> dx(xb);
  const auto ref = reference_matvec(from_bf16(xb), tw.deq, m, N, K);
  // Row i of an output y (N values) against the reference.
  auto check_row = [&](const float* y, int i, const std::string& what) {
    double num = 0, den = 0;  // nmse without its floor: row 1's outputs are ~1e-35
    for (int64_t n = 0; n < N; ++n) {
      const double d = static_cast<double>(y[n]) - ref[i * N + n];
      num += d * d;
      den += static_cast<double>(ref[i * N + n]) * ref[i * N + n];
      if (i == 3) ASSERT_EQ(y[n], 0.f) << what << " zero row, n=" << n;
    }
    if (i != 3) {
      ASSERT_GT(den, 0.0) << what << " row " << i;
      EXPECT_LT(num / den, 1e-6) << what << " row " << i;
    }
  };
  for (bool direct : {false, true}) {  // GemvTuning::tma_direct_fp16
    GemvTuning t = tuning_for(GemvPath::tma);
    t.tma_direct_fp16 = direct;
    set_gemv_tuning(t);
    const std::string what = std::string(c.name) + (direct ? " direct" : " conversion");
    Guarded<float> dy(m * N);
    gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
    expect_path(GemvPath::tma, c, what, m);
    const auto y = dy.download();
    for (int i = 0; i < m; ++i) check_row(y.data() + i * N, i, what);
    EXPECT_TRUE(dy.guards_intact()) << what;
  }
  // Each row alone: batch 1 (int4 there stages x as integer digits, lab note 70).
  set_gemv_tuning(tuning_for(GemvPath::tma));
  for (int i = 0; i < m; ++i) {
    const std::string what = std::string(c.name) + " batch 1, row " + std::to_string(i);
    Guarded<uint16_t> dxi(std::vector<uint16_t>(xb.begin() + i * K, xb.begin() + (i + 1) * K));
    Guarded<float> dyi(N);
    gemv(tw.dw, f32_gemv_args(1, dxi.get(), dyi.get()), nullptr);
    expect_path(GemvPath::tma, c, what, 1);
    check_row(dyi.download().data(), i, what);
    EXPECT_TRUE(dyi.guards_intact()) << what;
  }
  // int4 at batch 1: a non-finite x gives NaN in every output (its digits cannot carry it).
  if (c.format == WeightFormat::int4) {
    auto xi = std::vector<uint16_t>(xb.begin(), xb.begin() + K);
    xi[100] = 0x7f80;  // +inf
    Guarded<uint16_t> dxi(xi);
    Guarded<float> dyi(N);
    gemv(tw.dw, f32_gemv_args(1, dxi.get(), dyi.get()), nullptr);
    const auto y = dyi.download();
    for (int64_t n = 0; n < N; ++n) ASSERT_TRUE(std::isnan(y[n])) << c.name << " inf in x, n=" << n;
  }
}

// The inputs of tma_outputs_checked: x (rounded to bf16), resid and the norm weight, on the host
// and the device.
struct TmaInputs {
  TmaInputs(const std::vector<float>& x, std::vector<float> r, std::vector<uint16_t> w)
      : xb(to_bf16(x)), resid(std::move(r)), nw(std::move(w)), dx(xb), dres(resid), dnw(nw) {}
  std::vector<uint16_t> xb;
  std::vector<float> resid;
  std::vector<uint16_t> nw;
  Guarded<uint16_t> dx;
  Guarded<float> dres;
  Guarded<uint16_t> dnw;
};
// One TMA GEMV of x (bf16 input) and one of resid (RMSNorm input, norm weight nw) under tuning t,
// each asserted to run the TMA kernel and checked against the reference and its guards: the two
// outputs, {bf16 input, RMSNorm input}.
std::array<std::vector<float>, 2> tma_outputs_checked(const RandomTestWeight& tw,
                                                      const QuantCase& c, int m,
                                                      const TmaInputs& in, const GemvTuning& t,
                                                      const std::string& what) {
  const int64_t N = tw.dw.n, K = tw.dw.k;
  set_gemv_tuning(t);
  Guarded<float> dy(m * N), dz(m * N);
  gemv(tw.dw, f32_gemv_args(m, in.dx.get(), dy.get()), nullptr);
  expect_path(GemvPath::tma, c, what, m);
  gemv(tw.dw, rmsnorm_gemv_args(m, in.dres.get(), in.dnw.get(), GemvOutput::f32, dz.get()),
       nullptr);
  expect_path(GemvPath::tma, c, what + " rmsnorm", m);
  std::array<std::vector<float>, 2> out{dy.download(), dz.download()};
  EXPECT_TRUE(dy.guards_intact()) << what;
  EXPECT_TRUE(dz.guards_intact()) << what;
  EXPECT_LT(nmse(out[0], reference_matvec(from_bf16(in.xb), tw.deq, m, N, K)), 1e-6) << what;
  EXPECT_LT(
      nmse(out[1], reference_matvec(reference_rmsnorm(in.resid, m, K, in.nw), tw.deq, m, N, K)),
      2e-5)
      << what << " rmsnorm";
  return out;
}
// Rows first .. first + count - 1 of a row-major batch of rows of K.
std::vector<float> rows_of(const std::vector<float>& v, int64_t K, int first, int count) {
  return std::vector<float>(v.begin() + first * K, v.begin() + (first + count) * K);
}
// One GEMV of x (bf16 input) under tuning t, asserted to run off the TMA kernel, against the
// reference and its guards.
void off_tma_output_checked(const RandomTestWeight& tw, int m, const TmaInputs& in,
                            const GemvTuning& t, const std::string& what) {
  const int64_t N = tw.dw.n, K = tw.dw.k;
  set_gemv_tuning(t);
  Guarded<float> dy(m * N);
  gemv(tw.dw, f32_gemv_args(m, in.dx.get(), dy.get()), nullptr);
  EXPECT_FALSE(last_gemv_launch().tma) << what;
  EXPECT_TRUE(dy.guards_intact()) << what;
  EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(in.xb), tw.deq, m, N, K)), 1e-6)
      << what;
}
// tma_outputs_checked with the TMA tuning's switch `knob` off and on (labels what + l_off /
// l_on), and the two runs' outputs bit for bit alike, for both inputs.
void tma_switch_changes_no_result(const RandomTestWeight& tw, const QuantCase& c, int m,
                                  const TmaInputs& in, bool GemvTuning::*knob,
                                  const std::string& what, const char* l_off, const char* l_on) {
  GemvTuning off = tuning_for(GemvPath::tma), on = off;
  off.*knob = false;
  on.*knob = true;
  const auto oa = tma_outputs_checked(tw, c, m, in, off, what + l_off);
  const auto ob = tma_outputs_checked(tw, c, m, in, on, what + l_on);
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(std::memcmp(oa[i].data(), ob[i].data(), oa[i].size() * sizeof(float)), 0)
        << what << (i ? " rmsnorm" : " bf16") << ":" << l_off << " vs" << l_on;
}

// GemvTuning::tma_direct_fp16 (int8/int4 x staged as fp16 directly, its row scale taken before
// staging) gives bit for bit the outputs of the staging in bf16 plus the conversion pass, for the
// bf16 input and the RMSNorm input, M = 1, 2 and 5, with a row of x at 1e30; and both match the
// reference.
TEST_P(CudaGemv, TmaDirectFp16StagingMatchesTheConversionBitForBit) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_fp16_decode(c)) GTEST_SKIP() << c.name << " does not take the fp16 decode";
  TuningReset reset;
  const int64_t N = 700, K = 4096;
  const RandomTestWeight tw(N, K, c, 9);
  for (int m : {1, 2, 5}) {
    auto x = randn(m * K, 150 + m);
    if (m == 5)
      for (int64_t k = 0; k < K; ++k) x[4 * K + k] *= 1e30f;
    const TmaInputs inputs(x, randn(m * K, 160 + m, 3.f), norm_weight_bf16(K, 73));
    std::array<std::vector<float>, 2> out[2];  // [direct][input: bf16, rmsnorm]
    for (int direct = 0; direct < 2; ++direct) {
      GemvTuning t = tuning_for(GemvPath::tma);
      t.tma_direct_fp16 = direct == 1;
      out[direct] = tma_outputs_checked(
          tw, c, m, inputs, t,
          std::string(c.name) + " m=" + std::to_string(m) + (direct ? " direct" : " conversion"));
    }
    for (int in = 0; in < 2; ++in)
      for (int64_t i = 0; i < m * N; ++i)
        ASSERT_EQ(std::memcmp(&out[0][in][i], &out[1][in][i], sizeof(float)), 0)
            << c.name << " m=" << m << (in ? " rmsnorm" : " bf16") << " output " << i << ": "
            << out[0][in][i] << " vs " << out[1][in][i];
  }
}

// int4 at batch 1 stages x as integer digits (lab note 70) after the one-pass prologues (K =
// 4096) and the two-pass ones (K = 1280, padded to 2048; an RMSNorm row too long for one pass:
// 12288), for a bf16 input and the RMSNorm input, against the reference, with a partial tile.
TEST_P(CudaGemv, TmaInt4BatchOneDigitsMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!(tma_max_batch(c) > 0 && c.format == WeightFormat::int4))
    GTEST_SKIP() << c.name << " is not int4 on the TMA kernel";
  TuningReset reset;
  const int64_t N = 300;
  for (int64_t K : {1280, 4096, 12288}) {
    const RandomTestWeight tw(N, K, c, 20 + static_cast<uint32_t>(K));
    const TmaInputs inputs(randn(K, 170), randn(K, 171, 3.f), norm_weight_bf16(K, 74));
    tma_outputs_checked(tw, c, 1, inputs, tuning_for(GemvPath::tma),
                        std::string(c.name) + " K=" + std::to_string(K));
  }
}

// int4 at batches 2-4 on the fp16 decode (lab note 100), every group size: groups of 64 and 32
// with each scale group's x in its own columns of the mma (groups of 32 at batches 3-4 in two
// passes) and the x sums kept per group and row; rows of x longer than 64 KB beside a smaller
// ring (K = 12288 at batches 3-4: kTmaInt4BatchMaxX). Against the reference after the one-pass
// prologues (K = 4096) and the two-pass ones (K = 1280, padded; an RMSNorm row too long for one
// pass: 12288), for a bf16 and an RMSNorm input, with a partial tile; the conversion pass and the
// direct fp16 staging (GemvTuning::tma_direct_fp16) bit for bit alike.
TEST_P(CudaGemv, TmaInt4BatchesTwoToFourMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!(c.format == WeightFormat::int4 && tma_max_batch(c) >= 4))
    GTEST_SKIP() << c.name << " is not int4 on the TMA kernel";
  TuningReset reset;
  const int64_t N = 300;
  for (int64_t K : {1280, 4096, 12288}) {
    const RandomTestWeight tw(N, K, c, 30 + static_cast<uint32_t>(K));
    for (int m : {2, 3, 4}) {
      const TmaInputs inputs(randn(m * K, 180 + m), randn(m * K, 184 + m, 3.f),
                             norm_weight_bf16(K, 75));
      tma_switch_changes_no_result(
          tw, c, m, inputs, &GemvTuning::tma_direct_fp16,
          std::string(c.name) + " K=" + std::to_string(K) + " m=" + std::to_string(m),
          " conversion", " direct");
    }
  }
}

// Batch 8 where it would leave the TMA kernel (a row of x of K = 14336: 224 KB at batch 8; int4
// in groups of 64 / 32 at every K) runs as two launches of 4 rows on it where
// GemvTuning::tma_split_batch8 has the format's bit (the default: every format), with x up to 144 KB
// for every format (GemvTuning::tma_batch_max_x): both inputs against the reference, and bit for
// bit the outputs of the two halves' own batch-4 GEMVs. Without the bit batch 8 runs on another
// kernel.
TEST_P(CudaGemv, BatchEightSplitsInTwoWhereItWouldLeaveTheTmaKernel) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) < 4 || !device_has_tma()) GTEST_SKIP() << c.name << " is not on the TMA kernel";
  TuningReset reset;
  const int64_t N = 300, K = 14336;
  const RandomTestWeight tw(N, K, c, 41);
  const auto x = randn(8 * K, 190), resid = randn(8 * K, 191, 3.f);
  const auto nw = norm_weight_bf16(K, 77);
  auto rows = [&](const std::vector<float>& v, int first) { return rows_of(v, K, first, 4); };
  const TmaInputs all(x, resid, nw), head(rows(x, 0), rows(resid, 0), nw),
      tail(rows(x, 4), rows(resid, 4), nw);
  GemvTuning t = tuning_for(GemvPath::tma);
  t.tma_batch_max_x = 144 * 1024;
  t.tma_split_batch8 = 15;
  const std::string what = std::string(c.name) + " K=14336";
  const auto split = tma_outputs_checked(tw, c, 8, all, t, what + " m=8");
  const auto a = tma_outputs_checked(tw, c, 4, head, t, what + " rows 0-3");
  const auto b = tma_outputs_checked(tw, c, 4, tail, t, what + " rows 4-7");
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(split[i].size(), static_cast<size_t>(8 * N));
    EXPECT_EQ(std::memcmp(split[i].data(), a[i].data(), 4 * N * sizeof(float)), 0)
        << what << (i ? " rmsnorm" : " bf16") << ": rows 0-3";
    EXPECT_EQ(std::memcmp(split[i].data() + 4 * N, b[i].data(), 4 * N * sizeof(float)), 0)
        << what << (i ? " rmsnorm" : " bf16") << ": rows 4-7";
  }
  // The bit off: batch 8 on another kernel, still right.
  t.tma_split_batch8 = 0;
  off_tma_output_checked(tw, 8, all, t, what + " m=8 without the split");
}

// bf16 / int8 / fp8 at batches 2-4 take rows of x up to GemvTuning::tma_batch4_max_x (192 KB) on
// the TMA kernel, with one tile per tile-end barrier once x passes 144 KB (the ring keeps its
// stages): K = 18944 at batch 4 (148 KB of x) against the reference for both inputs, and the same
// results bit for bit at two tiles per barrier (x at 150 KB, allowed here). With a cap of 144 KB
// the batch runs on another kernel, still right.
TEST_P(CudaGemv, BatchFourTakesLongRowsOfX) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c) || c.format == WeightFormat::int4 || !device_has_tma())
    GTEST_SKIP() << c.name << ": int4 has its own bound (kTmaInt4BatchMaxX)";
  TuningReset reset;
  const int64_t N = 300, K = 18944;
  const RandomTestWeight tw(N, K, c, 43);
  const TmaInputs in(randn(4 * K, 192), randn(4 * K, 193, 3.f), norm_weight_bf16(K, 78));
  const std::string what = std::string(c.name) + " K=18944 m=4";
  GemvTuning t = tuning_for(GemvPath::tma);
  ASSERT_GE(t.tma_batch4_max_x, 192 * 1024) << "the default";
  const auto one = tma_outputs_checked(tw, c, 4, in, t, what);
  EXPECT_EQ(last_gemv_launch().tiles_per_barrier, 1) << what;
  t.tma_tile_group_fits_x = false;  // the tiles of the tuning (4), x and partial sums > 144 KB
  t.tma_tile_group = 2;
  const auto two = tma_outputs_checked(tw, c, 4, in, t, what + " two tiles");
  EXPECT_EQ(last_gemv_launch().tiles_per_barrier, 2) << what;
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(std::memcmp(one[i].data(), two[i].data(), one[i].size() * sizeof(float)), 0)
        << what << (i ? " rmsnorm" : " bf16") << ": one tile vs two";
  t = tuning_for(GemvPath::tma);
  t.tma_batch4_max_x = 144 * 1024;
  t.tma_split_batch4 = 0;  // (else 2 + 2 on the TMA kernel: BatchFourSplitsInTwo... below)
  off_tma_output_checked(tw, 4, in, t, what + " with x capped at 144 KB");
}

// Batch 4 where x does not fit beside the ring (K = 28672, llama3-70b's down projection: 224 KB
// of x at batch 4, past tma_batch4_max_x and int4's kTmaInt4BatchMaxX) runs as two launches of 2
// rows on the TMA kernel where GemvTuning::tma_split_batch4 has the format's bit (the default), and
// batch 8 as 4 + 4 with each half as 2 + 2: both inputs against the reference, and bit for bit the
// outputs of the rows' own batch-2 GEMVs. Without the bit batch 4 runs on another kernel.
TEST_P(CudaGemv, BatchFourSplitsInTwoWhereItWouldLeaveTheTmaKernel) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) < 4 || !device_has_tma()) GTEST_SKIP() << c.name << " is not on the TMA kernel";
  TuningReset reset;
  const int64_t N = 200, K = 28672;
  const RandomTestWeight tw(N, K, c, 47);
  const auto x = randn(8 * K, 194), resid = randn(8 * K, 195, 3.f);
  const auto nw = norm_weight_bf16(K, 79);
  auto rows = [&](const std::vector<float>& v, int first, int count) {
    return rows_of(v, K, first, count);
  };
  const GemvTuning t = tuning_for(GemvPath::tma);
  ASSERT_EQ(t.tma_split_batch4, 15) << "the default";
  ASSERT_EQ(t.tma_split_batch8, 15) << "the default";
  const std::string what = std::string(c.name) + " K=28672";
  std::vector<std::array<std::vector<float>, 2>> pairs;  // rows 2i, 2i + 1 as their own batch 2
  for (int i = 0; i < 4; ++i) {
    const TmaInputs in(rows(x, 2 * i, 2), rows(resid, 2 * i, 2), nw);
    pairs.push_back(
        tma_outputs_checked(tw, c, 2, in, t, what + " rows " + std::to_string(2 * i) + "-" +
                                                 std::to_string(2 * i + 1)));
  }
  for (const int m : {4, 8}) {
    const TmaInputs in(rows(x, 0, m), rows(resid, 0, m), nw);
    const auto split = tma_outputs_checked(tw, c, m, in, t, what + " m=" + std::to_string(m));
    EXPECT_EQ(last_gemv_launch().rows, 2) << what << " m=" << m << ": launches of 2 rows";
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(split[i].size(), static_cast<size_t>(m * N));
      for (int p = 0; p < m / 2; ++p)
        EXPECT_EQ(std::memcmp(split[i].data() + 2 * p * N, pairs[p][i].data(), 2 * N * sizeof(float)),
                  0)
            << what << " m=" << m << (i ? " rmsnorm" : " bf16") << ": rows " << 2 * p << "-"
            << 2 * p + 1;
    }
  }
  // The bit off: batch 4 on another kernel, still right.
  GemvTuning off = t;
  off.tma_split_batch4 = 0;
  const TmaInputs four(rows(x, 0, 4), rows(resid, 0, 4), nw);
  off_tma_output_checked(tw, 4, four, off, what + " m=4 without the split");
}

// Batch 8 with rows of x of K = 8192 (llama3-70b's qkv, o, gate_up and lm_head; llama3-1b's down)
// runs as one launch of 8 rows on the TMA kernel: bf16 / int8 / fp8 with x up to
// GemvTuning::tma_batch_max_x (160 KB: int8 and fp8 take 148 KB there with their sums), int4 in
// groups of 128 / 256 up to tma_int4_batch8_max_x (144 KB) where the v7 kernel does not take it.
// Against the reference for both inputs; under the former bounds (144 KB; int4 64 KB) int8, fp8
// and int4 run as 4 + 4, still right.
TEST_P(CudaGemv, BatchEightTakesRowsOfXOf8192) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (tma_max_batch(c) < 8 || !device_has_tma())
    GTEST_SKIP() << c.name << " is not on the TMA kernel at batch 8";
  TuningReset reset;
  const int64_t N = 300, K = 8192;
  const RandomTestWeight tw(N, K, c, 49);
  const TmaInputs in(randn(8 * K, 196), randn(8 * K, 197, 3.f), norm_weight_bf16(K, 80));
  const std::string what = std::string(c.name) + " K=8192 m=8";
  GemvTuning t = tuning_for(GemvPath::tma);
  ASSERT_GE(t.tma_batch_max_x, 160 * 1024) << "the default";
  ASSERT_GE(t.tma_int4_batch8_max_x, 144 * 1024) << "the default";
  tma_outputs_checked(tw, c, 8, in, t, what);
  EXPECT_EQ(last_gemv_launch().rows, 8) << what << ": one launch";
  if (c.format == WeightFormat::bf16) return;  // 128 KB of x, 16 KB of partial sums: within 144
  t.tma_batch_max_x = 144 * 1024;
  t.tma_int4_batch8_max_x = 64 * 1024;
  tma_outputs_checked(tw, c, 8, in, t, what + " under the former bounds");
  EXPECT_EQ(last_gemv_launch().rows, 4) << what << " under the former bounds: 4 + 4";
}

// int4 (groups of 128 / 256) at batch 8 where neither the TMA kernel (the int4 shape rule: 2048
// rows are too few tiles for the SMs) nor v7 (x past its 96 KB at K = 8192) takes it and v7 takes
// batch 4 (llama3-1b's down projection): 4 + 4 on v7 under the default tuning, against the
// reference; without the split, the CUDA-core kernel (run 320: 80 us there), still right.
TEST_P(CudaGemv, Int4BatchEightSplitsOntoV7WhereNoKernelTakesIt) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!(c.format == WeightFormat::int4 && c.group >= 128))
    GTEST_SKIP() << c.name << ": v7 takes int4 in groups of 128 / 256 at batch 4";
  TuningReset reset;
  const int64_t N = 2048, K = 8192;
  const RandomTestWeight tw(N, K, c, 51);
  const auto xb = to_bf16(randn(8 * K, 198));
  Guarded<uint16_t> dx(xb);
  const auto ref = reference_matvec(from_bf16(xb), tw.deq, 8, N, K);
  for (const int split : {15, 0}) {
    const std::string what = std::string(c.name) + " K=8192 m=8 split8=" + std::to_string(split);
    GemvTuning t;  // the default: the int4 shape rule on
    t.tma_split_batch8 = split;
    set_gemv_tuning(t);
    Guarded<float> dy(8 * N);
    gemv(tw.dw, f32_gemv_args(8, dx.get(), dy.get()), nullptr);
    const GemvLaunch l = last_gemv_launch();
    EXPECT_FALSE(l.tma) << what;
    EXPECT_EQ(l.tensor_cores, split != 0) << what;
    if (split != 0) EXPECT_EQ(l.rows, 4) << what;
    EXPECT_TRUE(dy.guards_intact()) << what;
    EXPECT_LT(nmse(dy.download(), ref), 1e-6) << what;
  }
}

// set_gemv_tuning refuses values the kernels do not take, with an error that names the field,
// and keeps the tuning in force. Host checks only: this runs without a GPU too.
TEST(CudaGemvTuning, RefusesValuesTheKernelsDoNotTake) {
  TuningReset reset;
  const GemvTuning good = gemv_tuning();
  auto refused = [&](GemvTuning t, const char* field) {
    try {
      set_gemv_tuning(t);
      ADD_FAILURE() << "accepted a bad " << field;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
    EXPECT_EQ(gemv_tuning().tma_tile_group, good.tma_tile_group) << field;
  };
  for (const int g : {0, 3, 16, -4}) {
    GemvTuning t = good;
    t.tma_tile_group = g;
    refused(t, "tma_tile_group");
    t = good;
    t.tma_tile_group_int4 = g;
    refused(t, "tma_tile_group_int4");
  }
  for (const int mask : {-1, 16}) {
    GemvTuning t = good;
    t.tma_pad_rows = mask;
    refused(t, "tma_pad_rows");
    t = good;
    t.tma_split_batch8 = mask;
    refused(t, "tma_split_batch8");
    t = good;
    t.tma_split_batch4 = mask;
    refused(t, "tma_split_batch4");
  }
  // The sizes and bounds that must not be negative.
  auto refused_negative = [&](auto field, const char* name) {
    GemvTuning t = good;
    t.*field = -1;
    refused(t, name);
  };
  refused_negative(&GemvTuning::tma_pad_rows_byte_max_k, "tma_pad_rows_byte_max_k");
  refused_negative(&GemvTuning::tma_pad_rows_int4_min_k, "tma_pad_rows_int4_min_k");
  refused_negative(&GemvTuning::tma_prefetch_next_bytes, "tma_prefetch_next_bytes");
  refused_negative(&GemvTuning::tma_ring_bytes, "tma_ring_bytes");
  refused_negative(&GemvTuning::tma_ring_bytes_decode, "tma_ring_bytes_decode");
  refused_negative(&GemvTuning::tma_ring_bytes_int4, "tma_ring_bytes_int4");
  refused_negative(&GemvTuning::tma_batch_max_x, "tma_batch_max_x");
  refused_negative(&GemvTuning::tma_batch4_max_x, "tma_batch4_max_x");
  refused_negative(&GemvTuning::tma_int4_batch8_max_x, "tma_int4_batch8_max_x");
  refused_negative(&GemvTuning::tma_batch_fewer_tiles_x, "tma_batch_fewer_tiles_x");
  refused_negative(&GemvTuning::tma_batch_fewer_tiles_x_byte, "tma_batch_fewer_tiles_x_byte");
  GemvTuning t = good;
  t.k_split = 3;
  refused(t, "k_split");
  for (const int g : {1, 2, 4, 8}) {
    t = good;
    t.tma_tile_group = t.tma_tile_group_int4 = g;
    t.tma_pad_rows = 15;
    EXPECT_NO_THROW(set_gemv_tuning(t)) << g;
    EXPECT_EQ(gemv_tuning().tma_tile_group, g);
  }
}

// int8's shape rule (GemvTuning::tma_int8_shape_rule), which fp8 weight-only follows too: with
// it, the TMA kernel for K >= 4096 with at least 1.5 tiles of 16 rows per SM, the register-ring
// kernel otherwise; without it (the default), the TMA kernel for every shape; all against the
// reference.
TEST(CudaGemvTuning, Int8TakesTheTmaKernelWhereMeasuredFaster) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset reset;
  EXPECT_FALSE(GemvTuning{}.tma_int8_shape_rule) << "the default";
  int dev = 0, sms = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  struct Shape {
    int64_t n, k;
  };
  for (const bool rule : {true, false}) {
    GemvTuning tune;
    tune.tma_int8_shape_rule = rule;
    set_gemv_tuning(tune);
    // fp8 weight-only follows int8's rule (the same bytes per weight).
    for (const QuantCase c : {QuantCase{WeightFormat::int8, 0, false, "int8"},
                              QuantCase{WeightFormat::fp8, 0, false, "fp8_row"}})
      for (const Shape sh : {Shape{24 * sms, 4096}, Shape{24 * sms - 16, 4096},
                             Shape{32 * sms, 2048}, Shape{32 * sms, 8192}}) {
        const bool tiles_ok = (sh.n + 15) / 16 * 2 >= 3 * sms;
        const bool want = device_has_tma() && (!rule || (sh.k >= 4096 && tiles_ok));
        const std::string what = std::string(c.name) + " " + std::to_string(sh.n) + "x" +
                                 std::to_string(sh.k) + (rule ? " shape rule" : " every shape");
        const RandomTestWeight tw(sh.n, sh.k, c, 7);
        auto xb = to_bf16(randn(sh.k, 130));
        Guarded<uint16_t> dx(xb);
        Guarded<float> dy(sh.n);
        gemv(tw.dw, f32_gemv_args(1, dx.get(), dy.get()), nullptr);
        EXPECT_EQ(last_gemv_launch().tma, want) << what;
        EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(xb), tw.deq, 1, sh.n, sh.k)), 1e-6)
            << what;
        EXPECT_TRUE(dy.guards_intact()) << what;
      }
  }
}

// fp8 weights whose activations are quantized on the fly (fp8dq) keep the CUDA-core kernel even
// where fp8 weight-only takes the TMA kernel: the same outputs, bit for bit, with tma_fp8 on/off.
TEST(CudaGemvTuning, Fp8WithActivationQuantizationStaysOffTheTmaKernel) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset reset;
  const int64_t N = 4096, K = 4096;
  const RandomTestWeight tw(N, K, QuantCase{WeightFormat::fp8, 0, false, "fp8_row"}, 11);
  DeviceWeight dq = tw.dw;
  dq.act_quant = ActQuant::fp8_row;
  Guarded<uint16_t> dx(to_bf16(randn(K, 131)));
  std::vector<std::vector<float>> ys;
  for (bool tma_fp8 : {true, false}) {
    GemvTuning t;
    t.tma_fp8 = tma_fp8;
    t.tma_int8_shape_rule = false;
    set_gemv_tuning(t);
    Guarded<float> dy(N);
    gemv(dq, f32_gemv_args(1, dx.get(), dy.get()), nullptr);
    EXPECT_FALSE(last_gemv_launch().tma) << "tma_fp8=" << tma_fp8;
    EXPECT_TRUE(dy.guards_intact());
    ys.push_back(dy.download());
  }
  EXPECT_EQ(ys[0], ys[1]);
}

// GemvTuning::tma_int4_min_k: with int4 on the TMA kernel, only weights with K >= the bound take
// it; the others stay on the register-ring tensor-core kernel. Both match the reference.
TEST(CudaGemvTuning, Int4MinKKeepsShorterRowsOnTheRegisterRing) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset reset;
  GemvTuning t;
  t.tma_int4 = true;
  t.tma_int4_shape_rule = false;
  t.tma_int4_min_k = 4096;
  set_gemv_tuning(t);
  const QuantCase c{WeightFormat::int4, 128, false, "int4_g128"};
  for (const int64_t K : {2048, 4096}) {
    const int64_t N = 1024;
    const RandomTestWeight tw(N, K, c, 12);
    auto xb = to_bf16(randn(K, 132));
    Guarded<uint16_t> dx(xb);
    Guarded<float> dy(N);
    gemv(tw.dw, f32_gemv_args(1, dx.get(), dy.get()), nullptr);
    const std::string what = "K=" + std::to_string(K);
    EXPECT_EQ(last_gemv_launch().tma, device_has_tma() && K >= 4096) << what;
    EXPECT_TRUE(last_gemv_launch().tensor_cores) << what;
    EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(xb), tw.deq, 1, N, K)), 1e-6) << what;
    EXPECT_TRUE(dy.guards_intact()) << what;
  }
}

// The default tuning's int4 shape rule (GemvTuning::tma_int4_shape_rule): from batch 2, int4 g128
// takes the TMA kernel where K >= 4096 and there are at least 1.5 tiles of 16 rows per SM, the
// register ring elsewhere; at batch 1 the TMA kernel everywhere; all match the reference.
TEST(CudaGemvTuning, Int4TakesTheTmaKernelOnTheShapeRulesShapes) {
  AO_SKIP_WITHOUT_GPU();
  TuningReset reset;
  set_gemv_tuning(GemvTuning{});
  int dev = 0, sms = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  AO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t big = (3 * sms / 2 + 1) * 16;  // rows: just over 1.5 tiles per SM
  const QuantCase c{WeightFormat::int4, 128, false, "int4_g128"};
  struct Shape {
    int64_t n, k;
    bool tma;
  };
  // The rule's shapes at batch 2; batch 1 (the integer tensor cores, lab note 70) takes the TMA
  // kernel on every shape.
  for (const Shape sh :
       {Shape{big, 4096, true}, Shape{big, 2048, false}, Shape{1024, 4096, false}}) {
    const RandomTestWeight tw(sh.n, sh.k, c, 13);
    for (int m : {1, 2}) {
      auto xb = to_bf16(randn(m * sh.k, 133));
      Guarded<uint16_t> dx(xb);
      Guarded<float> dy(m * sh.n);
      gemv(tw.dw, f32_gemv_args(m, dx.get(), dy.get()), nullptr);
      const std::string what =
          "N=" + std::to_string(sh.n) + " K=" + std::to_string(sh.k) + " m=" + std::to_string(m);
      EXPECT_EQ(last_gemv_launch().tma, device_has_tma() && (sh.tma || m == 1)) << what;
      EXPECT_LT(nmse(dy.download(), reference_matvec(from_bf16(xb), tw.deq, m, sh.n, sh.k)), 1e-6)
          << what;
      EXPECT_TRUE(dy.guards_intact()) << what;
    }
  }
}

// Two GEMVs back to back on one stream, the second reading the first's output through its
// RMSNorm prologue, with the next-kernel launch at each GEMV's start (the default) and in its last
// tile, and the RMSNorm weight loaded before the grid-dependency wait (the default) or after it;
// through every kernel path that takes the format.
TEST_P(CudaGemv, DependentLaunchChainMatchesReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  const int64_t N = 2048, K = 2048;  // the first GEMV's output is the second's input
  const RandomTestWeight tw(N, K, c, 5);
  const auto& deq = tw.deq;
  TuningReset reset;
  const auto nw = norm_weight_bf16(K, 71);
  Guarded<uint16_t> dnw(nw);
  cudaStream_t s;
  AO_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (int m : {1, 2}) {
    auto xb = to_bf16(randn(m * K, 90 + m));
    const auto y1 = reference_matvec(from_bf16(xb), deq, m, N, K);
    const auto y2 = reference_matvec(reference_rmsnorm(y1, m, K, nw), deq, m, N, K);
    Guarded<uint16_t> dx(xb);
    for (GemvPath path : {GemvPath::tma, GemvPath::mma, GemvPath::cuda_cores})
      for (bool early : {true, false})
        for (int hold : {3, 1, 0, -1})          // the TMA ring: 3 or 1 stages, all, none before x
          for (bool late_nw : {false, true}) {  // the RMSNorm weight loaded after the wait
            if (path != GemvPath::tma && hold != 3) continue;
            if (late_nw && (hold != 3 || !early)) continue;
            GemvTuning t = tuning_for(path);
            t.early_dependents = early;
            t.tma_fp16_early_dependents = early;  // the TMA kernel's fp16 formats likewise
            t.tma_hold_stages = t.tma_hold_stages_bf16_input = t.tma_hold_stages_bf16_input_decode =
                hold;
            t.norm_weight_before_wait = !late_nw;
            set_gemv_tuning(t);
            const std::string what = std::string(c.name) + " m=" + std::to_string(m) +
                                     path_name(path) + (early ? " early" : " last tile") +
                                     " hold=" + std::to_string(hold) +
                                     (late_nw ? " norm weight after the wait" : "");
            Guarded<float> d1(m * N), d2(m * N);
            for (int rep = 0; rep < 3; ++rep) {
              gemv(tw.dw, f32_gemv_args(m, dx.get(), d1.get()), s);
              gemv(tw.dw, rmsnorm_gemv_args(m, d1.get(), dnw.get(), GemvOutput::f32, d2.get()), s);
            }
            AO_CUDA_CHECK(cudaStreamSynchronize(s));
            EXPECT_LT(nmse(d1.download(), y1), 1e-6) << what;
            EXPECT_LT(nmse(d2.download(), y2), 2e-5) << what << " (second, via RMSNorm)";
            EXPECT_TRUE(d1.guards_intact()) << what;
            EXPECT_TRUE(d2.guards_intact()) << what;
          }
  }
  AO_CUDA_CHECK(cudaStreamDestroy(s));
}

// GemvTuning::tma_evict_first (the TMA kernel's weight copies under an L2 evict-first policy)
// changes no output, bit for bit against the default policy, for whole-row stages (K = 2048) and
// per-row chunks (K = 8192), a bf16 input and the RMSNorm prologue; the reference bounds both.
TEST_P(CudaGemv, TmaEvictFirstChangesNoResult) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c)) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  for (const int64_t K : {2048, 8192}) {
    const int64_t N = 700;
    const RandomTestWeight tw(N, K, c, 6);
    for (int m : {1, 2}) {  // (x of 3 rows of 8192 does not fit the TMA kernel's shared memory)
      const TmaInputs inputs(randn(m * K, 95 + m), randn(m * K, 97 + m, 3.f),
                             norm_weight_bf16(K, 72));
      tma_switch_changes_no_result(
          tw, c, m, inputs, &GemvTuning::tma_evict_first,
          std::string(c.name) + " K=" + std::to_string(K) + " m=" + std::to_string(m),
          " default", " evict-first");
    }
  }
}

// GemvTuning::tma_x_registers (x operands held in registers where each consumer warp takes the
// same segments of every tile) changes no result: bit for bit against x from shared memory, both
// inputs, and the reference.
// K = 2048 and 4096 take the registers at batch 1 for int8 and fp8 (launch record); K = 8192 does
// not (8 segments per warp and tile), nor batch 2, nor int4 (its x stays in shared memory).
// The launch record also shows the default stage-row padding: int4 where K >= 4096
// (GemvTuning::tma_pad_rows_int4_min_k), int8 and fp8 where K <= 2048
// (GemvTuning::tma_pad_rows_byte_max_k), bf16 never.
TEST_P(CudaGemv, TmaXRegistersChangeNoResult) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c)) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  for (const int64_t K : {2048, 4096, 8192}) {
    const int64_t N = 700;
    const RandomTestWeight tw(N, K, c, 8);
    for (int m : {1, 2}) {
      const TmaInputs inputs(randn(m * K, 120 + m), randn(m * K, 122 + m, 3.f),
                             norm_weight_bf16(K, 74));
      std::array<std::vector<float>, 2> out[2];  // [registers][input]
      for (int on = 0; on < 2; ++on) {
        GemvTuning t = tuning_for(GemvPath::tma);
        t.tma_x_registers = on == 1;
        const std::string what = std::string(c.name) + " K=" + std::to_string(K) +
                                 " m=" + std::to_string(m) + (on ? " registers" : " shared");
        out[on] = tma_outputs_checked(tw, c, m, inputs, t, what);
        const bool want = on == 1 && m == 1 && takes_fp16_decode(c) &&
                          c.format != WeightFormat::int4 && K <= 4096;
        EXPECT_EQ(last_gemv_launch().x_registers, want) << what;
        const bool byte = c.format == WeightFormat::int8 || c.format == WeightFormat::fp8;
        EXPECT_EQ(last_gemv_launch().padded_rows,
                  (c.format == WeightFormat::int4 && K >= 4096) || (byte && K <= 2048))
            << what;
      }
      for (int in = 0; in < 2; ++in)
        EXPECT_EQ(std::memcmp(out[0][in].data(), out[1][in].data(), m * N * sizeof(float)), 0)
            << c.name << " K=" << K << " m=" << m << (in ? " rmsnorm" : " bf16");
    }
  }
}

// GemvTuning::tma_ring_bytes: rings of 40 KB (512-byte row chunks, wrapping many times per
// tile), 64 KB and 224 KB (as much as shared memory leaves) still take the TMA kernel, each
// launch with more shared memory than the smaller ring's and at most its ring beside x (64 KB
// at most) and the barriers, and match the reference, for whole-row and per-row stages, both
// inputs; 5000 rows, so every block runs 2-3 tiles and the ring wraps across them. (Another ring
// may pick another chunk, which changes which warp sums which segment: no bitwise comparison
// with the default.) Then the default ring of each format: 176 KB for bf16, the decode formats'
// own (GemvTuning::tma_ring_bytes_decode), int4's (GemvTuning::tma_ring_bytes_int4).
TEST_P(CudaGemv, TmaRingSizesMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const QuantCase c = GetParam();
  if (!takes_tma(c)) GTEST_SKIP() << c.name << " does not take the TMA kernel";
  TuningReset reset;
  const int64_t N = 5000;
  for (const int64_t K : {2048, 8192}) {
    const RandomTestWeight tw(N, K, c, 17);
    const TmaInputs inputs(randn(K, 190), randn(K, 191, 3.f), norm_weight_bf16(K, 76));
    size_t smem = 0;
    for (const int kb : {40, 64, 224}) {
      GemvTuning t = tuning_for(GemvPath::tma);
      t.tma_ring_bytes = kb * 1024;
      const std::string what =
          std::string(c.name) + " K=" + std::to_string(K) + " ring " + std::to_string(kb) + " KB";
      tma_outputs_checked(tw, c, 1, inputs, t, what);
      const size_t got = last_gemv_launch().smem;
      EXPECT_GT(got, smem) << what;
      EXPECT_LE(got, static_cast<size_t>(kb + 64 + 1) * 1024) << what;
      smem = got;
    }
    // The default ring (tma_ring_bytes = 0): 176 KB for bf16, tma_ring_bytes_decode (144 KB) for
    // the formats that decode, which a 176 KB decode default would exceed (or equal, where the
    // cap of 8 stages binds first: int4 g256 at K = 2048 has 8 stages of 17 KB in either).
    size_t smem144 = 0;
    for (const int dec_kb : {144, 176}) {
      GemvTuning t = tuning_for(GemvPath::tma);
      t.tma_ring_bytes_decode = dec_kb * 1024;
      t.tma_ring_bytes_int4 = 0;  // int4 follows tma_ring_bytes_decode
      const std::string what = std::string(c.name) + " K=" + std::to_string(K) +
                               " default ring, decode " + std::to_string(dec_kb) + " KB";
      tma_outputs_checked(tw, c, 1, inputs, t, what);
      const size_t got = last_gemv_launch().smem;
      const int ring_kb = c.format == WeightFormat::bf16 ? 176 : dec_kb;
      EXPECT_LE(got, static_cast<size_t>(ring_kb + 64 + 1) * 1024) << what;
      if (c.format == WeightFormat::bf16)
        EXPECT_GT(got, static_cast<size_t>(144 + 1) * 1024) << what;
      else if (dec_kb == 176 && c.format == WeightFormat::int4)
        EXPECT_GE(got, smem144) << what;
      else if (dec_kb == 176)
        EXPECT_GT(got, smem144) << what;  // int8/fp8: 4 stages of 32 KB (K = 2048) become 5
      else
        smem144 = got;
    }
    // int4's own default ring (GemvTuning::tma_ring_bytes_int4, 144 KB since lab note 92): the
    // plan of an explicit 144 KB ring (GemvTuning::tma_ring_bytes), the same as the decode
    // default's above, at most 144 KB beside x.
    if (c.format == WeightFormat::int4) {
      const std::string what = std::string(c.name) + " K=" + std::to_string(K) + " int4 ring";
      GemvTuning t144 = tuning_for(GemvPath::tma);
      t144.tma_ring_bytes = 144 * 1024;
      tma_outputs_checked(tw, c, 1, inputs, t144, what + " (explicit 144 KB)");
      const size_t smem_explicit = last_gemv_launch().smem;
      tma_outputs_checked(tw, c, 1, inputs, tuning_for(GemvPath::tma), what);
      const size_t got = last_gemv_launch().smem;
      EXPECT_EQ(got, smem_explicit) << what;
      EXPECT_LE(got, static_cast<size_t>(144 + 64 + 1) * 1024) << what;
      EXPECT_EQ(got, smem144) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaGemv,
                         ::testing::Values(QuantCase{WeightFormat::bf16, 0, false, "bf16"},
                                           QuantCase{WeightFormat::int8, 0, false, "int8"},
                                           QuantCase{WeightFormat::int4, 32, false, "int4_g32"},
                                           QuantCase{WeightFormat::int4, 64, false, "int4_g64"},
                                           QuantCase{WeightFormat::int4, 128, false, "int4_g128"},
                                           QuantCase{WeightFormat::int4, 256, false, "int4_g256"},
                                           QuantCase{WeightFormat::fp8, 0, false, "fp8_row"},
                                           QuantCase{WeightFormat::fp8, 0, true, "fp8_tensor"}),
                         [](const auto& info) { return std::string(info.param.name); });

// The lab's decode-step timeline (bench_cuda_decode --trace) from hand-made events: a GEMV of
// two blocks, then an attention kernel; host code only, no GPU needed.
TEST(CudaKernelTrace, ReportLaysOutOneStep) {
  auto ev = [](TraceKind kind, uint64_t tag, uint32_t block, TracePoint p, uint64_t t) {
    KernelTraceEvent e{};
    e.time_ns = t, e.tag = tag, e.block = block, e.n = 1000, e.k = 2000;
    e.kind = static_cast<uint16_t>(kind), e.point = static_cast<uint8_t>(p);
    return e;
  };
  using P = TracePoint;
  const auto G = TraceKind::gemv, A = TraceKind::attention;
  const std::vector<KernelTraceEvent> step = {
      ev(A, 2, 0, P::wait_done, 1300),
      ev(A, 2, 0, P::end, 1500),  // any order
      ev(G, 1, 0, P::start, 100),
      ev(G, 1, 1, P::start, 150),
      ev(G, 1, 0, P::wait_done, 300),
      ev(G, 1, 1, P::wait_done, 320),
      ev(G, 1, 0, P::rms_done, 400),
      ev(G, 1, 1, P::rms_done, 410),
      ev(G, 1, 0, P::x_landed, 350),
      ev(G, 1, 0, P::staged, 450),  // block 0 only
      ev(G, 1, 0, P::x_last, 420),
      ev(G, 1, 1, P::x_last, 400),
      KernelTraceEvent{},  // a reserved slot no block stamped (time 0): skipped
      ev(G, 1, 0, P::prologue_done, 500),
      ev(G, 1, 1, P::prologue_done, 560),
      ev(G, 1, 0, P::end, 1000),
      ev(G, 1, 1, P::end, 1200)};
  KernelTraceReport report(0.5);
  report.add_step(step);
  report.add_step(step);
  EXPECT_EQ(report.steps(), 2);
  EXPECT_DOUBLE_EQ(report.step_us(), 1.4);  // 100 .. 1500 ns
  EXPECT_DOUBLE_EQ(report.resolution_ns(), 10);
  const auto rows = report.rows();
  ASSERT_EQ(rows.size(), 2u);
  const KernelTraceRow& g = rows[0];
  EXPECT_EQ(g.name, "gemv 1000x2000");
  EXPECT_DOUBLE_EQ(g.per_step, 1);
  EXPECT_DOUBLE_EQ(g.adds, 1.1);  // its last end - the step's first start
  EXPECT_DOUBLE_EQ(g.start, 0);
  EXPECT_DOUBLE_EQ(g.start_last, 0.05);
  EXPECT_DOUBLE_EQ(g.wait, 0.2);
  EXPECT_DOUBLE_EQ(g.rmsnorm, 0.11);  // last RMSNorm end - first wait release
  EXPECT_DOUBLE_EQ(g.prologue, 0.26);
  EXPECT_NEAR(g.block_prologue, 0.22, 1e-12);  // (200 + 240) / 2 ns
  EXPECT_NEAR(g.block_x_landed, 0.05, 1e-12);  // the one block that stamped it: 350 - 300 ns
  EXPECT_NEAR(g.block_staged, 0.15, 1e-12);
  EXPECT_NEAR(g.block_x_last, 0.1, 1e-12);  // (120 + 80) / 2 ns from each block's wait release
  EXPECT_DOUBLE_EQ(g.stream, 0.64);
  EXPECT_DOUBLE_EQ(g.tail, 0.2);
  EXPECT_DOUBLE_EQ(g.blocks, 2);
  EXPECT_DOUBLE_EQ(g.weight_mb, 1.0);  // 1000 x 2000 x 0.5 bytes
  const KernelTraceRow& at = rows[1];
  EXPECT_EQ(at.name, "attention");
  EXPECT_DOUBLE_EQ(at.adds, 0.3);
  EXPECT_DOUBLE_EQ(at.wait, 0.1);
  EXPECT_DOUBLE_EQ(at.weight_mb, 0);
  EXPECT_DOUBLE_EQ(at.block_x_landed, 0);
  EXPECT_DOUBLE_EQ(at.block_x_last, 0);
}

// Each GEMV kernel (CUDA-core, int4 register-ring mma, TMA) gets its own row, named after it, and
// counts its weight bytes; two instances of one kind with different weights are separate rows.
TEST(CudaKernelTrace, ReportNamesEachGemvKernel) {
  auto ev = [](TraceKind kind, uint64_t tag, uint32_t n, TracePoint p, uint64_t t) {
    KernelTraceEvent e{};
    e.time_ns = t, e.tag = tag, e.block = 0, e.n = n, e.k = 1024;
    e.kind = static_cast<uint16_t>(kind), e.point = static_cast<uint8_t>(p);
    return e;
  };
  using P = TracePoint;
  const auto T = TraceKind::gemv_tma, MM = TraceKind::gemv_int4_mma;
  std::vector<KernelTraceEvent> step;
  uint64_t t = 0;
  for (const auto& [kind, tag, n] :
       {std::tuple{T, 1ull, 2048u}, std::tuple{MM, 2ull, 512u}, std::tuple{T, 3ull, 4096u}})
    for (P p : {P::start, P::wait_done, P::prologue_done, P::end})
      step.push_back(ev(kind, tag, n, p, t += 100));
  KernelTraceReport report(2.0);  // bf16
  report.add_step(step);
  const auto rows = report.rows();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].name, "gemv 2048x1024 (tma)");
  EXPECT_EQ(rows[1].name, "gemv 512x1024 (mma)");
  EXPECT_EQ(rows[2].name, "gemv 4096x1024 (tma)");
  EXPECT_DOUBLE_EQ(rows[0].weight_mb, 2048 * 1024 * 2.0 / 1e6);
  EXPECT_DOUBLE_EQ(rows[2].weight_mb, 4096 * 1024 * 2.0 / 1e6);
  EXPECT_DOUBLE_EQ(rows[0].prologue, 0.1);
  EXPECT_DOUBLE_EQ(rows[0].stream, 0.1);
}

// ---- elementwise ---------------------------------------------------------------------------

// The embedding loads rows of up to 8192 columns into registers before the next kernel may launch
// and copies longer ones in a loop after it (elementwise.cu): both sides of that bound, and a
// row length that is no multiple of the block, copied exactly, with the guards intact.
TEST(CudaKernels, EmbeddingRowsOnBothSidesOfTheRegisterRound) {
  AO_SKIP_WITHOUT_GPU();
  for (const int D : {8192, 8193, 12288}) {
    const int V = 5, M = 2;
    auto emb = to_bf16(randn(static_cast<size_t>(V) * D, 11 + D));
    const std::vector<int32_t> toks = {4, 1};
    Guarded<uint16_t> demb(emb);
    Guarded<int32_t> dt(toks);
    Guarded<float> res(static_cast<size_t>(M) * D);
    embedding(demb.get(), dt.get(), M, D, res.get(), nullptr);
    const auto r = res.download();
    for (int m = 0; m < M; ++m)
      for (int i = 0; i < D; ++i)
        ASSERT_EQ(r[static_cast<size_t>(m) * D + i],
                  bf16_to_f32(emb[static_cast<size_t>(toks[m]) * D + i]))
            << "D=" << D << " m=" << m << " i=" << i;
    EXPECT_TRUE(res.guards_intact()) << "D=" << D;
  }
}

TEST(CudaKernels, EmbeddingAddRmsnormSwiglu) {
  AO_SKIP_WITHOUT_GPU();
  const int V = 50, D = 200, M = 3, F = 300;
  auto emb = to_bf16(randn(V * D, 1));
  std::vector<int32_t> toks = {7, 0, 49};
  Guarded<uint16_t> demb(emb);
  Guarded<int32_t> dt(toks);
  Guarded<float> res(M * D);
  embedding(demb.get(), dt.get(), M, D, res.get(), nullptr);
  auto r = res.download();
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < D; ++i) ASSERT_EQ(r[m * D + i], bf16_to_f32(emb[toks[m] * D + i]));
  EXPECT_TRUE(res.guards_intact());

  auto delta = to_bf16(randn(M * D, 2));
  auto w = to_bf16(randn(D, 3));
  Guarded<uint16_t> dd(delta), dw(w), out(M * D);
  add_rmsnorm(res.get(), dd.get(), dw.get(), 1e-5f, M, D, out.get(), nullptr);
  auto got = from_bf16(out.download());
  auto r2 = res.download();
  std::vector<float> ref(M * D), rres(M * D);
  for (int m = 0; m < M; ++m) {
    double ss = 0;
    for (int i = 0; i < D; ++i) {
      rres[m * D + i] = r[m * D + i] + bf16_to_f32(delta[m * D + i]);
      ss += rres[m * D + i] * rres[m * D + i];
    }
    const float inv = 1.f / std::sqrt(static_cast<float>(ss / D) + 1e-5f);
    for (int i = 0; i < D; ++i)
      ref[m * D + i] = round_bf16(round_bf16(rres[m * D + i] * inv) * bf16_to_f32(w[i]));
  }
  EXPECT_LT(nmse(r2, rres), 1e-12);
  EXPECT_LT(nmse(got, ref), 1e-5);
  EXPECT_TRUE(out.guards_intact());
  EXPECT_TRUE(res.guards_intact());

  auto gu = to_bf16(randn(M * 2 * F, 4, 2.f));
  Guarded<uint16_t> dgu(gu), hout(M * F);
  swiglu(dgu.get(), M, F, hout.get(), nullptr);
  auto h = from_bf16(hout.download());
  std::vector<float> href(M * F);
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < F; ++j) {
      const float g = bf16_to_f32(gu[m * 2 * F + 2 * j]),
                  u = bf16_to_f32(gu[m * 2 * F + 2 * j + 1]);
      href[m * F + j] = round_bf16(round_bf16(g / (1.f + std::exp(-g))) * u);
    }
  EXPECT_LT(nmse(h, href), 1e-5);
  EXPECT_TRUE(hout.guards_intact());
}

TEST(CudaKernels, ConvertAndFill) {
  AO_SKIP_WITHOUT_GPU();
  auto v = randn(1000, 5);
  Guarded<float> src(v);
  Guarded<uint16_t> dst(20 * 64);
  convert_to_bf16(src.get(), 0, dst.get(), 20, 50, 64, nullptr);
  auto d = dst.download();
  for (int r = 0; r < 20; ++r)
    for (int c = 0; c < 50; ++c) ASSERT_EQ(d[r * 64 + c], f32_to_bf16(v[r * 50 + c]));
  EXPECT_TRUE(dst.guards_intact());
}

// RoPE + cache append reference; returns q [M, H, hd] and fills caches [KV, S, hd].
void reference_rope(const std::vector<float>& qkv, int M, int p0, int H, int KV, int hd, int S,
                    bool inter, const std::vector<float>& inv_freq, const std::vector<float>* bias,
                    std::vector<float>& q, std::vector<float>& kc, std::vector<float>& vc) {
  const int heads = H + 2 * KV;
  q.assign(M * H * hd, 0.f);
  for (int m = 0; m < M; ++m)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const int i0 = inter ? 2 * i : i, i1 = inter ? 2 * i + 1 : i + hd / 2;
        float x0 = qkv[(m * heads + h) * hd + i0], x1 = qkv[(m * heads + h) * hd + i1];
        if (bias) {
          x0 = round_bf16(x0 + (*bias)[h * hd + i0]);
          x1 = round_bf16(x1 + (*bias)[h * hd + i1]);
        }
        const int p = p0 + m;
        if (h < H + KV) {
          const double ang = static_cast<double>(p) * inv_freq[i];
          const float c = std::cos(ang), s = std::sin(ang);
          const float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
          x0 = y0, x1 = y1;
        }
        float* dst = h < H        ? &q[(m * H + h) * hd]
                     : h < H + KV ? &kc[((h - H) * S + p) * hd]
                                  : &vc[((h - H - KV) * S + p) * hd];
        dst[i0] = round_bf16(x0);
        dst[i1] = round_bf16(x1);
      }
}

std::vector<float> reference_attention(const std::vector<float>& q, int M, int p0, int H, int KV,
                                       int hd, int S, const std::vector<float>& kc,
                                       const std::vector<float>& vc) {
  std::vector<float> out(M * H * hd);
  const int G = H / KV;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  for (int m = 0; m < M; ++m)
    for (int h = 0; h < H; ++h) {
      const int kv = h / G, p = p0 + m;
      std::vector<double> s(p + 1);
      double mx = -1e30;
      for (int j = 0; j <= p; ++j) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += q[(m * H + h) * hd + i] * kc[(kv * S + j) * hd + i];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double z = 0;
      for (auto& v : s) z += (v = std::exp(v - mx));
      for (int i = 0; i < hd; ++i) {
        double a = 0;
        for (int j = 0; j <= p; ++j) a += s[j] * vc[(kv * S + j) * hd + i];
        out[(m * H + h) * hd + i] = static_cast<float>(a / z);
      }
    }
  return out;
}

// RoPE inverse frequencies of head size hd (theta 10000).
std::vector<float> rope_inv_freq(int hd) {
  std::vector<float> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) inv_freq[i] = 1.f / std::pow(10000.f, 2.f * i / hd);
  return inv_freq;
}

// The rows of a qkv weight [N, K] in the pair-adjacent order the engine stores
// (RopeArgs::paired): rows 2i, 2i + 1 of each head are the rotated pair, i.e. rows i, i + hd / 2
// of the HF order (inter = false) or rows 2i, 2i + 1 already (llama2.c, inter = true).
std::vector<float> pair_adjacent_rows(const std::vector<float>& w, int N, int K, int hd,
                                      bool inter) {
  std::vector<float> wp(w.size());
  for (int r = 0; r < N; ++r) {
    const int h = r / hd, j = r % hd, i = j / 2;
    const int src = inter ? r : h * hd + ((j & 1) ? i + hd / 2 : i);
    std::copy(&w[size_t(src) * K], &w[size_t(src) * K] + K, &wp[size_t(r) * K]);
  }
  return wp;
}

struct AttnCase {
  int H, KV, hd, S;
};

// The qkv GEMV's RoPE + KV-append epilogue arguments (pair-adjacent weight rows) on top of a.
GemvArgs rope_kv_gemv_args(GemvArgs a, const AttnCase& c, bool inter, const float* inv_freq,
                           const uint16_t* bias, const int32_t* pos, uint16_t* q, uint16_t* k,
                           uint16_t* v) {
  a.rope.n_heads = c.H;
  a.rope.n_kv_heads = c.KV;
  a.rope.head_dim = c.hd;
  a.rope.interleaved = inter;
  a.rope.paired = true;
  a.rope.inv_freq = inv_freq;
  a.rope.bias = bias;
  a.rope.max_seq = c.S;
  a.pos = pos;
  a.q_out = q;
  a.k_cache = k;
  a.v_cache = v;
  return a;
}

class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, RopePrefillThenDecodeMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const auto c = GetParam();
  const int H = c.H, KV = c.KV, hd = c.hd, S = c.S, heads = H + 2 * KV;
  const std::vector<float> inv_freq = rope_inv_freq(hd);
  Guarded<float> dinv(inv_freq);
  for (bool inter : {false, true}) {
    std::vector<float> kc(KV * S * hd, 0.f), vc(KV * S * hd, 0.f), q;
    Guarded<uint16_t> dk(KV * S * hd), dv(KV * S * hd);
    AO_CUDA_CHECK(cudaMemset(dk.get(), 0, dk.bytes()));
    AO_CUDA_CHECK(cudaMemset(dv.get(), 0, dv.bytes()));
    auto bias = from_bf16(to_bf16(randn(heads * hd, 9, 0.1f)));
    Guarded<uint16_t> dbias(to_bf16(bias));
    RopeArgs ra;
    ra.n_heads = H;
    ra.n_kv_heads = KV;
    ra.head_dim = hd;
    ra.interleaved = inter;
    ra.inv_freq = dinv.get();
    ra.bias = dbias.get();
    ra.max_seq = S;
    AttentionArgs aa{H, KV, hd, S, 1.f / std::sqrt(static_cast<float>(hd))};
    // Prefill two chunks (positions 0..M1-1, then M1..M1+M2-1), then decode steps.
    int p0 = 0;
    for (int M : {45, 70, 1, 1, 1}) {
      auto qkv = from_bf16(to_bf16(randn(M * heads * hd, 100 + p0)));
      reference_rope(qkv, M, p0, H, KV, hd, S, inter, inv_freq, &bias, q, kc, vc);
      auto ref = reference_attention(q, M, p0, H, KV, hd, S, kc, vc);
      Guarded<uint16_t> dqkv(to_bf16(qkv)), dq(M * H * hd), dout(M * H * hd);
      Guarded<int32_t> dpos(std::vector<int32_t>{p0});
      rope_kv_append(dqkv.get(), M, dpos.get(), ra, dq.get(), dk.get(), dv.get(), nullptr);
      auto gq = from_bf16(dq.download());
      EXPECT_LT(nmse(gq, q), 1e-5) << "rope q M=" << M << " inter=" << inter;
      if (M > 1) {
        attention_prefill(dq.get(), M, dk.get(), dv.get(), dpos.get(), aa, dout.get(), nullptr);
      } else {
        Guarded<uint8_t> ws(attention_decode_workspace(aa));
        AO_CUDA_CHECK(cudaMemset(ws.get(), 0, ws.bytes()));
        attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), dout.get(),
                         nullptr);
        EXPECT_TRUE(ws.guards_intact());
      }
      auto got = from_bf16(dout.download());
      EXPECT_LT(nmse(got, ref), 2e-5) << "attention M=" << M << " pos=" << p0;
      EXPECT_TRUE(dout.guards_intact());
      EXPECT_TRUE(dq.guards_intact());
      p0 += M;
    }
    auto gk = from_bf16(dk.download());
    EXPECT_LT(nmse(gk, kc), 1e-5);
    EXPECT_TRUE(dk.guards_intact());
    EXPECT_TRUE(dv.guards_intact());
  }
}

// The qkv GEMV with the fused bias + RoPE + KV-append epilogue, against GEMV -> reference RoPE.
TEST_P(CudaAttention, QkvGemvRopeEpilogueMatchesReference) {
  AO_SKIP_WITHOUT_GPU();
  const auto c = GetParam();
  const int H = c.H, KV = c.KV, hd = c.hd, S = c.S, heads = H + 2 * KV;
  const int K = 256, N = heads * hd;
  const std::vector<float> inv_freq = rope_inv_freq(hd);
  Guarded<float> dinv(inv_freq);
  auto w = from_bf16(to_bf16(randn(size_t(N) * K, 61, 0.1f)));
  auto bias = from_bf16(to_bf16(randn(N, 62, 0.1f)));
  Guarded<uint16_t> dbias(to_bf16(bias));
  // bf16 and int4 g128 (the tensor-core int4 kernel has its own RoPE epilogue); int4 g64 and g32
  // (at batch 2 on the TMA kernel's column groups where it takes them, lab note 100).
  const QuantCase formats[] = {{WeightFormat::bf16, 0, false, "bf16"},
                               {WeightFormat::int4, 128, false, "int4_g128"},
                               {WeightFormat::int4, 64, false, "int4_g64"},
                               {WeightFormat::int4, 32, false, "int4_g32"}};
  for (int fi = 0; fi < 4; ++fi)
    for (bool inter : {false, true}) {
      const QuantCase qc = formats[fi];
      // Quantization is per row (and group), so the row permutation below commutes with it.
      const auto wq = reference_dequant(w, N, K, qc.format, qc.group, false);
      // Pair-adjacent row order, as the engine stores it.
      const std::vector<float> wp = pair_adjacent_rows(w, N, K, hd, inter);
      TestWeight tw(to_bf16(wp), N, K, qc);
      const int M = 2, p0 = 7;
      auto resid = randn(M * K, 63, 2.f);
      auto nw = to_bf16(std::vector<float>(K, 1.f));
      const auto xn = reference_rmsnorm(resid, M, K, nw);  // norm weight 1
      std::vector<float> qkv(M * N);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double a = 0;
          for (int k = 0; k < K; ++k) a += double(xn[m * K + k]) * wq[size_t(n) * K + k];
          qkv[m * N + n] = round_bf16(static_cast<float>(a));
        }
      std::vector<float> q, kc(KV * S * hd, 0.f), vc(KV * S * hd, 0.f);
      reference_rope(qkv, M, p0, H, KV, hd, S, inter, inv_freq, &bias, q, kc, vc);
      Guarded<float> dres(resid);
      Guarded<uint16_t> dnw(nw), dq(M * H * hd), dk(KV * S * hd), dv(KV * S * hd);
      AO_CUDA_CHECK(cudaMemset(dk.get(), 0, dk.bytes()));
      AO_CUDA_CHECK(cudaMemset(dv.get(), 0, dv.bytes()));
      Guarded<int32_t> dpos(std::vector<int32_t>{p0});
      const GemvArgs a = rope_kv_gemv_args(
          rmsnorm_gemv_args(M, dres.get(), dnw.get(), GemvOutput::rope_kv, nullptr), c, inter,
          dinv.get(), dbias.get(), dpos.get(), dq.get(), dk.get(), dv.get());
      gemv(tw.dw, a, nullptr);
      EXPECT_LT(nmse(from_bf16(dq.download()), q), 1e-4) << qc.name << " q inter=" << inter;
      EXPECT_LT(nmse(from_bf16(dk.download()), kc), 1e-4) << qc.name << " k inter=" << inter;
      EXPECT_LT(nmse(from_bf16(dv.download()), vc), 1e-4) << qc.name << " v inter=" << inter;
      EXPECT_TRUE(dq.guards_intact());
      EXPECT_TRUE(dk.guards_intact());
      EXPECT_TRUE(dv.guards_intact());
    }
}

// The decode step's qkv GEMV (RMSNorm, RoPE + KV append epilogue) and decode attention back to
// back on one stream, as the engine runs them: attention is a programmatic dependent launch that
// may start while the GEMV still runs (and reads the position and the older rows before its
// wait), and the row at *pos holds stale values until the GEMV writes it. Positions in the first
// warp step, later steps and (for the longer caches) several splits; the attention's loads
// before its wait (the default) and after it, and the query heads of a KV head split over 4
// blocks (the default), 2 or 1 (AttentionTuning); the GEMV launching the attention late
// (GemvTuning::tma_late_outputs, the default) and at its start.
TEST_P(CudaAttention, QkvGemvThenDecodeAttentionOnOneStream) {
  AO_SKIP_WITHOUT_GPU();
  const auto c = GetParam();
  const int H = c.H, KV = c.KV, hd = c.hd, S = c.S, heads = H + 2 * KV;
  const int K = 2048, N = heads * hd;
  const std::vector<float> inv_freq = rope_inv_freq(hd);
  Guarded<float> dinv(inv_freq);
  const auto w = from_bf16(to_bf16(randn(size_t(N) * K, 64, 0.05f)));
  const std::vector<float> wp = pair_adjacent_rows(w, N, K, hd, false);
  TestWeight tw(to_bf16(wp), N, K, QuantCase{WeightFormat::bf16, 0, false, "bf16"});
  const auto nw = to_bf16(std::vector<float>(K, 1.f));
  // A cache of random rows (earlier steps) and junk at the positions the GEMV will write.
  auto kc = from_bf16(to_bf16(randn(size_t(KV) * S * hd, 65)));
  auto vc = from_bf16(to_bf16(randn(size_t(KV) * S * hd, 66)));
  Guarded<uint16_t> dk(to_bf16(kc)), dv(to_bf16(vc)), dnw(nw), dq(H * hd), dout(H * hd);
  const AttentionArgs aa{H, KV, hd, S, 1.f / std::sqrt(static_cast<float>(hd))};
  Guarded<uint8_t> ws(attention_decode_workspace(aa));
  AO_CUDA_CHECK(cudaMemset(ws.get(), 0, ws.bytes()));
  cudaStream_t s;
  AO_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  TuningReset reset;
  // AttentionTuning: loads before the wait, head_blocks.
  const AttentionTuning tunings[] = {{true, 4}, {false, 4}, {true, 2}, {true, 1}, {false, 1}};
  for (const bool qkv_late : {true, false})
    for (const AttentionTuning& at : tunings)
      for (const int p0 : {5, 63, 64, 100, S - 1}) {
        GemvTuning gt;
        if (!qkv_late) gt.tma_late_outputs = 0;
        set_gemv_tuning(gt);
        set_attention_tuning(at);
        const bool before_wait = at.loads_before_wait;
        auto resid = randn(K, 67 + p0, 2.f);
        const auto xn = reference_rmsnorm(resid, 1, K, nw);
        std::vector<float> qkv(N);
        for (int n = 0; n < N; ++n) {
          double acc = 0;
          for (int k = 0; k < K; ++k) acc += double(xn[k]) * w[size_t(n) * K + k];
          qkv[n] = round_bf16(static_cast<float>(acc));
        }
        std::vector<float> q;
        reference_rope(qkv, 1, p0, H, KV, hd, S, false, inv_freq, nullptr, q, kc, vc);
        const auto ref = reference_attention(q, 1, p0, H, KV, hd, S, kc, vc);
        Guarded<float> dres(resid);
        Guarded<int32_t> dpos(std::vector<int32_t>{p0});
        const GemvArgs a = rope_kv_gemv_args(
            rmsnorm_gemv_args(1, dres.get(), dnw.get(), GemvOutput::rope_kv, nullptr), c, false,
            dinv.get(), nullptr, dpos.get(), dq.get(), dk.get(), dv.get());
        gemv(tw.dw, a, s);
        attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), dout.get(), s);
        AO_CUDA_CHECK(cudaStreamSynchronize(s));
        EXPECT_LT(nmse(from_bf16(dout.download()), ref), 2e-5)
            << "pos=" << p0 << (before_wait ? "" : " (loads after the wait)")
            << (qkv_late ? "" : " (attention launched at the GEMV's start)")
            << " head_blocks=" << at.head_blocks;
        EXPECT_TRUE(dout.guards_intact());
        // The next position's rows stay junk until their own step writes them.
      }
  set_attention_tuning({});
  EXPECT_TRUE(ws.guards_intact());
  EXPECT_TRUE(dk.guards_intact());
  EXPECT_TRUE(dv.guards_intact());
  AO_CUDA_CHECK(cudaStreamDestroy(s));
}

// The qkv GEMV of each weight format followed by the decode attention on one stream, as the engine
// runs them (4 blocks per KV head, the default): the output against a double reference over the
// GPU's own q and cache. bf16, int8, fp8 and int4 weights; caches of one or two chunks (c.S) and of
// 1100 positions (partials and the merge), positions at the chunk edges; every call reuses the
// workspace, so a merge counter left non-zero fails later calls.
TEST_P(CudaAttention, EachFormatsQkvGemvThenDecodeAttention) {
  AO_SKIP_WITHOUT_GPU();
  const auto c = GetParam();
  const int H = c.H, KV = c.KV, hd = c.hd;
  const int K = 1024, N = (H + 2 * KV) * hd;
  const std::vector<float> inv_freq = rope_inv_freq(hd);
  Guarded<float> dinv(inv_freq);
  const auto w = from_bf16(to_bf16(randn(size_t(N) * K, 81, 0.05f)));
  const std::vector<float> wp = pair_adjacent_rows(w, N, K, hd, false);
  const auto nw = to_bf16(std::vector<float>(K, 1.f));
  Guarded<uint16_t> dnw(nw), dq(H * hd), dout(H * hd);
  cudaStream_t s;
  AO_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (const int S : {c.S, 1100}) {
    const AttentionArgs aa{H, KV, hd, S, 1.f / std::sqrt(static_cast<float>(hd))};
    Guarded<uint8_t> ws(attention_decode_workspace(aa));
    AO_CUDA_CHECK(cudaMemset(ws.get(), 0, ws.bytes()));
    const auto kc0 = to_bf16(randn(size_t(KV) * S * hd, 82));
    const auto vc0 = to_bf16(randn(size_t(KV) * S * hd, 83));
    Guarded<uint16_t> dk(kc0), dv(vc0);
    for (const QuantCase qc : {QuantCase{WeightFormat::bf16, 0, false, "bf16"},
                               QuantCase{WeightFormat::int8, 0, false, "int8"},
                               QuantCase{WeightFormat::fp8, 0, false, "fp8_row"},
                               QuantCase{WeightFormat::int4, 128, false, "int4_g128"}}) {
      TestWeight tw(to_bf16(wp), N, K, qc);
      for (const int p0 : {0, 5, 127, 128, S / 2, S - 1}) {
        const auto resid = randn(K, 84 + p0, 2.f);
        Guarded<float> dres(resid);
        Guarded<int32_t> dpos(std::vector<int32_t>{p0});
        GemvArgs a = rope_kv_gemv_args(
            rmsnorm_gemv_args(1, dres.get(), dnw.get(), GemvOutput::rope_kv, nullptr), c, false,
            dinv.get(), nullptr, dpos.get(), dq.get(), dk.get(), dv.get());
        a.rope.max_seq = S;
        dk.upload(kc0);
        dv.upload(vc0);
        AO_CUDA_CHECK(cudaMemset(dout.get(), 0xff, dout.bytes()));
        AO_CUDA_CHECK(cudaDeviceSynchronize());
        gemv(tw.dw, a, s);
        attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), dout.get(), s);
        AO_CUDA_CHECK(cudaStreamSynchronize(s));
        const std::string where =
            std::string(qc.name) + " S=" + std::to_string(S) + " pos=" + std::to_string(p0);
        const auto ref = reference_attention(from_bf16(dq.download()), 1, p0, H, KV, hd, S,
                                             from_bf16(dk.download()), from_bf16(dv.download()));
        EXPECT_LT(nmse(from_bf16(dout.download()), ref), 1e-5) << where;
      }
    }
    EXPECT_TRUE(ws.guards_intact());
    EXPECT_TRUE(dk.guards_intact());
    EXPECT_TRUE(dv.guards_intact());
  }
  EXPECT_TRUE(dout.guards_intact());
  EXPECT_TRUE(dq.guards_intact());
  AO_CUDA_CHECK(cudaStreamDestroy(s));
}

// Long contexts straight from a random cache: the tensor-core prefill kernel (queries in the
// middle of the cache, several key tiles, rows not a multiple of the block) and decode at
// positions that use one split, a few and all of them (with chunks longer than one step).
TEST_P(CudaAttention, LongContextPrefillAndDecodeMatchReference) {
  AO_SKIP_WITHOUT_GPU();
  const auto c = GetParam();
  const int H = c.H, KV = c.KV, hd = c.hd, S = 2560;
  auto kc = from_bf16(to_bf16(randn(size_t(KV) * S * hd, 71)));
  auto vc = from_bf16(to_bf16(randn(size_t(KV) * S * hd, 72)));
  Guarded<uint16_t> dk(to_bf16(kc)), dv(to_bf16(vc));
  AttentionArgs aa{H, KV, hd, S, 1.f / std::sqrt(static_cast<float>(hd))};
  // Reference rows: queries q [M, H, hd] at positions p0 + m (only those rows are computed).
  auto reference = [&](const std::vector<float>& q, int M, int p0) {
    std::vector<float> out(size_t(M) * H * hd);
    const int G = H / KV;
    for (int m = 0; m < M; ++m)
      for (int h = 0; h < H; ++h) {
        const int kv = h / G, p = p0 + m;
        std::vector<double> sc(p + 1);
        double mx = -1e30;
        for (int j = 0; j <= p; ++j) {
          double d = 0;
          const float* kr = &kc[(size_t(kv) * S + j) * hd];
          const float* qr = &q[(size_t(m) * H + h) * hd];
          for (int i = 0; i < hd; ++i) d += double(qr[i]) * kr[i];
          sc[j] = d * aa.scale;
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (auto& v : sc) z += (v = std::exp(v - mx));
        std::vector<double> acc(hd, 0.0);
        for (int j = 0; j <= p; ++j) {
          const float* vr = &vc[(size_t(kv) * S + j) * hd];
          for (int i = 0; i < hd; ++i) acc[i] += sc[j] * vr[i];
        }
        for (int i = 0; i < hd; ++i) out[(size_t(m) * H + h) * hd + i] = float(acc[i] / z);
      }
    return out;
  };
  struct Step {
    int M, p0;
  };
  for (const Step st :
       {Step{200, 1000}, Step{130, 0}, Step{1, 40}, Step{1, 700}, Step{1, 2047}, Step{1, 2559}}) {
    auto q = from_bf16(to_bf16(randn(size_t(st.M) * H * hd, 80 + st.p0, 2.f)));
    Guarded<uint16_t> dq(to_bf16(q)), dout(size_t(st.M) * H * hd);
    Guarded<int32_t> dpos(std::vector<int32_t>{st.p0});
    Guarded<uint8_t> ws(attention_decode_workspace(aa));
    AO_CUDA_CHECK(cudaMemset(ws.get(), 0, ws.bytes()));
    if (st.M > 1)
      attention_prefill(dq.get(), st.M, dk.get(), dv.get(), dpos.get(), aa, dout.get(), nullptr);
    else
      attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), dout.get(), nullptr);
    const auto ref = reference(q, st.M, st.p0);
    EXPECT_LT(nmse(from_bf16(dout.download()), ref), 2e-5) << "M=" << st.M << " p0=" << st.p0;
    EXPECT_TRUE(dout.guards_intact());
    EXPECT_TRUE(ws.guards_intact());
    if (st.M == 1) {  // the merge leaves its counters at zero for the next step / graph replay
      attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), dout.get(), nullptr);
      EXPECT_LT(nmse(from_bf16(dout.download()), ref), 2e-5) << "repeat p0=" << st.p0;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention,
                         ::testing::Values(AttnCase{8, 2, 128, 256}, AttnCase{8, 4, 8, 200},
                                           AttnCase{4, 4, 64, 160}, AttnCase{16, 2, 64, 130}));

// ---- the o projection's x as int4 digits (GemvInput::int4_digits) ---------------------------

// Byte offset of digit n (0: the 65536s, 1: the 256s, 2: the units) of x[j] in an int4_digits
// buffer: per 128-k segment gi, [half wd / 2][digit n][lane t] of 16 bytes, each two words (wd %
// 2) of 4 bytes, byte i of word h holding element 2 i + h of the 8 values j & ~7 (wd = (j / 8) %
// 4 and t = (j / 32) % 4 of the mma's k order; kernels.h, GemvInput::int4_digits).
size_t digit_byte(int j, int n) {
  const int gi = j >> 7, t = (j >> 5) & 3, wd = (j >> 3) & 3, e = j & 7;
  return ((((size_t(gi) * 2 + (wd >> 1)) * 12 + n * 4 + t) * 2 + (wd & 1)) * 2 + (e & 1)) * 4 +
         (e >> 1);
}

// x [K] (bf16 values) as an int4_digits buffer written on the host: per segment S = 2^(22 - e),
// the segment's max in [2^(e-1), 2^e) (at most 2^126; 1 for an all-zero segment), X = rn(x S).
std::vector<uint8_t> host_int4_digits(const std::vector<float>& x) {
  const int K = static_cast<int>(x.size());
  std::vector<uint8_t> b(int4_digits_bytes(K));
  for (int gi = 0; gi < K / 128; ++gi) {
    float mx = 0.f;
    for (int j = 0; j < 128; ++j) mx = std::max(mx, std::fabs(x[gi * 128 + j]));
    int e = 0;
    std::frexp(mx, &e);
    const double S = mx > 0.f ? std::ldexp(1.0, std::min(22 - e, 126)) : 1.0;
    int64_t sum = 0;
    for (int j = gi * 128; j < gi * 128 + 128; ++j) {
      const int32_t X = static_cast<int32_t>(std::nearbyint(x[j] * S));
      sum += X;
      const uint32_t u = static_cast<uint32_t>(X + 0x808080);
      for (int n = 0; n < 3; ++n) b[digit_byte(j, n)] = static_cast<uint8_t>((u >> (8 * (2 - n))) ^ 0x80);
    }
    const float inv = static_cast<float>(1.0 / S);
    float* cs = reinterpret_cast<float*>(b.data() + size_t(K) * 3) + 2 * gi;
    cs[0] = inv;
    cs[1] = static_cast<float>(sum) * inv;
  }
  return b;
}

// The o projection with its x as int4 digits (written on the host per the format) adds to the
// residual what the bf16-input GEMV of the same x adds, and both match the reference: segments
// scaled by 2^-6 .. 2^6, one at 1e-30 of the others and an all-zero one (and that tiny segment
// alone), groups of 128 and 256, a partial tile; bit for bit on a repeat; guards; and the
// refusals, each naming what is wrong.
TEST(CudaGemvInt4Digits, DigitsInputMatchesTheBf16Input) {
  AO_SKIP_WITHOUT_GPU();
  if (!device_has_tma()) GTEST_SKIP() << "no TMA kernel before sm_90";
  TuningReset reset;
  const int64_t N = 1000, K = 4096;
  auto x = randn(K, 301, 2.f);
  for (int gi = 0; gi < K / 128; ++gi)
    for (int j = gi * 128; j < gi * 128 + 128; ++j)
      x[j] *= gi == 3 ? 1e-30f : gi == 5 ? 0.f : std::ldexp(1.f, (gi * 5) % 13 - 6);
  std::vector<float> tiny(K, 0.f);  // segment 3 alone
  std::copy(x.begin() + 3 * 128, x.begin() + 4 * 128, tiny.begin() + 3 * 128);
  for (int g : {128, 256}) {
    const QuantCase c{WeightFormat::int4, g, false, g == 128 ? "int4-g128" : "int4-g256"};
    const RandomTestWeight tw(N, K, c, 303 + g);
    ASSERT_TRUE(gemv_takes_int4_digits(tw.dw)) << c.name;
    for (const auto* xs : {&x, &tiny}) {
      const std::string what = std::string(c.name) + (xs == &tiny ? " tiny segment alone" : "");
      const auto xb = to_bf16(*xs);
      const auto xf = from_bf16(xb);
      const auto r0 = randn(N, 302, xs == &tiny ? 1e-30f : 1.f);
      Guarded<uint8_t> dd(host_int4_digits(xf));
      Guarded<uint16_t> dx(xb);
      Guarded<float> r_dig(r0), r_dig2(r0), r_bf16(r0);
      GemvArgs a;
      a.output = GemvOutput::add_residual;
      a.x = dx.get();
      a.y = r_bf16.get();
      gemv(tw.dw, a, nullptr);
      a.input = GemvInput::int4_digits;
      a.x = dd.get();
      a.y = r_dig.get();
      gemv(tw.dw, a, nullptr);
      a.y = r_dig2.get();
      gemv(tw.dw, a, nullptr);
      const auto yd = r_dig.download(), yd2 = r_dig2.download(), yb = r_bf16.download();
      const auto ref = reference_matvec(xf, tw.deq, 1, N, K);
      std::vector<float> rref(N);
      for (int64_t n = 0; n < N; ++n) {
        rref[n] = r0[n] + round_bf16(ref[n]);
        ASSERT_EQ(std::memcmp(&yd[n], &yd2[n], 4), 0) << what << " repeat, n=" << n;
      }
      EXPECT_LT(nmse(yd, rref), 1e-6) << what;
      EXPECT_LT(nmse(yb, rref), 1e-6) << what << " (bf16 input)";
      EXPECT_LT(nmse(yd, yb), 1e-7) << what << " against the bf16 input";
      EXPECT_TRUE(r_dig.guards_intact() && r_bf16.guards_intact() && dd.guards_intact()) << what;
    }
  }
  // Refusals: batch 2, an output other than the residual add, an unaligned buffer, int8 weights,
  // K padded.
  const QuantCase c128{WeightFormat::int4, 128, false, "int4-g128"};
  const RandomTestWeight tw(64, K, c128, 310);
  Guarded<uint8_t> dd(int4_digits_bytes(K));
  Guarded<float> dy(2 * 64);
  GemvArgs a;
  a.input = GemvInput::int4_digits;
  a.x = dd.get();
  a.output = GemvOutput::add_residual;
  a.y = dy.get();
  auto refused = [&](const DeviceWeight& w, const GemvArgs& args, const char* what) {
    try {
      gemv(w, args, nullptr);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  GemvArgs b = a;
  b.m = 2;
  refused(tw.dw, b, "needs batch 1");
  b = a;
  b.output = GemvOutput::f32;
  refused(tw.dw, b, "needs add_residual output");
  b = a;
  b.x = dd.get() + 8;
  refused(tw.dw, b, "16-byte aligned");
  const RandomTestWeight t8(64, K, QuantCase{WeightFormat::int8, 0, false, "int8"}, 311);
  EXPECT_FALSE(gemv_takes_int4_digits(t8.dw));
  refused(t8.dw, a, "needs int4 weights");
  const RandomTestWeight tp(64, 1280, c128, 312);  // K = 1280, padded to 2048
  EXPECT_FALSE(gemv_takes_int4_digits(tp.dw));
  refused(tp.dw, a, "K = K padded");
  EXPECT_TRUE(dy.guards_intact());
}

// The decode attention's int4 digits (attention_decode's int4_digits output) against its own bf16
// output, read back on the host: the output unchanged by writing them; per 128-k segment
// S puts the max in [2^21, 2^22); X = rn(out S), exact for every value above 2^-14 of the max;
// the segment's {1 / S, sum of X / S}; positions in one split and in several (the last block's
// merge), query heads over 4 blocks and over 1 per KV head, head_dim 128 and 256; an infinite V
// entry gives the segments that hold its dim, in its KV head's query heads, a NaN 1 / S and
// leaves the others finite; head_dim 64 is refused.
TEST(CudaAttentionInt4Digits, DecodeWritesTheDigitsOfItsOutput) {
  AO_SKIP_WITHOUT_GPU();
  AttentionTuningReset reset;
  struct Case {
    int H, KV, hd, head_blocks;
  };
  for (const Case cs : {Case{32, 8, 128, 4}, Case{32, 8, 128, 1}, Case{8, 2, 256, 4}}) {
    set_attention_tuning(AttentionTuning{true, cs.head_blocks});
    const int H = cs.H, KV = cs.KV, hd = cs.hd, S = 2304, K = H * hd;
    AttentionArgs aa{H, KV, hd, S, 1.f / std::sqrt(static_cast<float>(hd))};
    ASSERT_TRUE(attention_decode_writes_int4_digits(aa));
    auto kc = to_bf16(randn(size_t(KV) * S * hd, 320));
    auto vc = to_bf16(randn(size_t(KV) * S * hd, 321));
    for (int inf_v : {0, 1}) {
      if (inf_v) vc[(size_t(1) * S + 5) * hd + 7] = 0x7f80;  // KV head 1, position 5: +inf
      Guarded<uint16_t> dk(kc), dv(vc);
      const auto q = to_bf16(randn(size_t(H) * hd, 322, 2.f));
      Guarded<uint16_t> dq(q);
      for (int p : {0, 63, 127, 300, 2200}) {
        const std::string what = "H=" + std::to_string(H) + " hd=" + std::to_string(hd) +
                                 " hb=" + std::to_string(cs.head_blocks) +
                                 " pos=" + std::to_string(p) + (inf_v ? " inf" : "");
        Guarded<int32_t> dpos(std::vector<int32_t>{p});
        Guarded<uint8_t> ws(attention_decode_workspace(aa));
        AO_CUDA_CHECK(cudaMemset(ws.get(), 0, ws.bytes()));
        Guarded<uint16_t> out0(K), out1(K);
        Guarded<uint8_t> dig(int4_digits_bytes(K));
        attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), out0.get(),
                         nullptr);
        attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), aa, ws.get(), out1.get(),
                         nullptr, dig.get());
        const auto o0 = out0.download(), o1 = out1.download();
        ASSERT_EQ(o0, o1) << what << ": the output changed";
        const auto b = dig.download();
        const float* cs2 = reinterpret_cast<const float*>(b.data() + size_t(K) * 3);
        const int G = H / KV;
        for (int gi = 0; gi < K / 128; ++gi) {
          const float inv = cs2[2 * gi], xs = cs2[2 * gi + 1];
          const int head = gi * 128 / hd;
          // The infinite entry is dim 7 of its V row: the first segment of each of its heads.
          if (inf_v && p >= 5 && head / G == 1 && (gi * 128) % hd == 0) {
            EXPECT_TRUE(std::isnan(inv)) << what << " segment " << gi;
            continue;
          }
          float mx = 0.f;
          for (int j = gi * 128; j < gi * 128 + 128; ++j) mx = std::max(mx, std::fabs(bf16_to_f32(o0[j])));
          ASSERT_TRUE(std::isfinite(inv) && inv > 0.f) << what << " segment " << gi;
          ASSERT_GT(mx, 0.f) << what;
          const double scaled = mx / static_cast<double>(inv);
          EXPECT_TRUE(scaled >= 2097152.0 && scaled < 4194304.0) << what << " segment " << gi;
          int64_t sum = 0;
          for (int j = gi * 128; j < gi * 128 + 128; ++j) {
            int32_t X = 0;
            for (int n = 0; n < 3; ++n) X = X * 256 + static_cast<int8_t>(b[digit_byte(j, n)]);
            sum += X;
            const float v = bf16_to_f32(o0[j]);
            if (std::fabs(v) >= mx * 0x1p-14f)
              ASSERT_EQ(static_cast<float>(X) * inv, v) << what << " j=" << j;
            else
              ASSERT_LE(std::fabs(static_cast<double>(X) * inv - v), 0.5 * inv) << what << " j=" << j;
          }
          EXPECT_EQ(xs, static_cast<float>(sum) * inv) << what << " segment " << gi;
        }
        EXPECT_TRUE(dig.guards_intact() && out1.guards_intact() && ws.guards_intact()) << what;
      }
    }
  }
  set_attention_tuning(AttentionTuning{});
  AttentionArgs a64{8, 2, 64, 256, 0.125f};
  EXPECT_FALSE(attention_decode_writes_int4_digits(a64));
  Guarded<uint8_t> dig(int4_digits_bytes(512)), ws(attention_decode_workspace(a64));
  Guarded<uint16_t> dq(512), dk(2 * 256 * 64), dv(2 * 256 * 64), out(512);
  Guarded<int32_t> dpos(std::vector<int32_t>{3});
  try {
    attention_decode(dq.get(), dk.get(), dv.get(), dpos.get(), a64, ws.get(), out.get(), nullptr,
                     dig.get());
    ADD_FAILURE() << "head_dim 64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 128 or 256"), std::string::npos) << e.what();
  }
}

// ---- sampling ----------------------------------------------------------------------------

TEST(CudaKernels, SamplingGreedyTopKTopP) {
  AO_SKIP_WITHOUT_GPU();
  const int V = 5000;
  auto logits = randn(V, 7, 2.f);
  const int best =
      static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  Guarded<float> dl(logits);
  Guarded<SamplerState> st(1);
  Guarded<int32_t> tok(1), out(64), nout(1), pos(1);
  auto run = [&](float T, int k, float p, int n) {
    SamplerState s{T, k, p, 0, 1234, 0};
    st.upload({s});
    nout.upload({0});
    pos.upload({5});
    for (int i = 0; i < n; ++i)
      sample(dl.get(), V, st.get(), tok.get(), out.get(), 64, nout.get(), pos.get(), 1, nullptr);
    auto o = out.download();
    o.resize(n);
    EXPECT_EQ(pos.download()[0], 5 + n);
    return o;
  };
  for (int t : run(0.f, 0, 1.f, 3)) EXPECT_EQ(t, best);
  for (int t : run(1.f, 1, 1.f, 5)) EXPECT_EQ(t, best);
  // top-k = 10: every draw among the 10 largest logits, and more than one distinct draw.
  std::vector<int> order(V);
  for (int i = 0; i < V; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::set<int> top10(order.begin(), order.begin() + 10);
  auto draws = run(5.f, 10, 1.f, 60);
  std::set<int> seen;
  for (int t : draws) {
    EXPECT_TRUE(top10.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 1u);
  // top-p: the nucleus of the softmax at T = 1.
  std::vector<double> pr(V);
  double z = 0;
  for (int i = 0; i < V; ++i) z += (pr[i] = std::exp(logits[i] - logits[best]));
  double cum = 0;
  std::set<int> nucleus;
  for (int i : order) {
    nucleus.insert(i);
    cum += pr[i] / z;
    if (cum >= 0.5) break;
  }
  for (int t : run(1.f, 0, 0.5f, 40)) EXPECT_TRUE(nucleus.count(t)) << t;
  EXPECT_TRUE(out.guards_intact());
  EXPECT_TRUE(tok.guards_intact());
}

// Greedy sampling over several blocks (kGreedyBlocks): the token must be the CPU's argmax with
// the single-block kernel's rules (the larger logit; on a tie, -0 and +0 included, the smaller
// index; NaN never; all -inf gives index 0) wherever the winners fall among the blocks, at a
// 128K vocabulary (float4 units) and an odd one (scalar units), and the scratch must be left at
// zero for the next sample (the same answer twice in a row, with the state's words read back).
TEST(CudaKernels, SamplingGreedyMatchesArgmaxAcrossBlocks) {
  AO_SKIP_WITHOUT_GPU();
  auto cpu_argmax = [](const std::vector<float>& l) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = 0; i < static_cast<int>(l.size()); ++i)
      if (l[i] > bv || (l[i] == bv && i < bi)) bv = l[i], bi = i;
    return bi;
  };
  for (const int V : {128256, 50001}) {
    struct Case {
      const char* name;
      std::function<void(std::vector<float>&)> edit;
    };
    const Case cases[] = {
        {"random", [](std::vector<float>&) {}},
        {"tie across blocks",
         [V](std::vector<float>& l) { l[V - 3] = l[V / 2 + 1] = l[V / 3] = 50.f; }},
        {"-0 and +0 tie",
         [](std::vector<float>& l) {
           for (auto& v : l) v = -std::fabs(v) - 1.f;
           l[70000 % l.size()] = 0.f;
           l[20000] = -0.f;
         }},
        {"all -inf", [](std::vector<float>& l) { std::fill(l.begin(), l.end(), -INFINITY); }},
        {"NaNs above the max",
         [V](std::vector<float>& l) {
           for (int i = 0; i < V; i += 997) l[i] = NAN;
           l[V - 1] = 30.f;
         }},
        {"max in the last unit", [V](std::vector<float>& l) { l[V - 1] = 99.f; }},
    };
    for (const Case& c : cases) {
      auto logits = randn(V, 17, 2.f);
      c.edit(logits);
      const int want = cpu_argmax(logits);
      const std::string what = std::string(c.name) + " V=" + std::to_string(V);
      Guarded<float> dl(logits);
      Guarded<SamplerState> st(1);
      Guarded<int32_t> tok(1), out(8), nout(1), pos(1);
      st.upload({SamplerState{0.f, 0, 1.f, 0, 1, 0}});
      nout.upload({0});
      pos.upload({0});
      for (int rep = 0; rep < 2; ++rep) {
        sample(dl.get(), V, st.get(), tok.get(), out.get(), 8, nout.get(), pos.get(), 1, nullptr);
        EXPECT_EQ(tok.download()[0], want) << what << " rep " << rep;
        const SamplerState after = st.download()[0];
        EXPECT_EQ(after.best_key, 0ull) << what;
        EXPECT_EQ(after.blocks_done, 0u) << what;
        EXPECT_EQ(after.step, static_cast<uint64_t>(rep + 1)) << what;
      }
      EXPECT_EQ(pos.download()[0], 2) << what;
      EXPECT_EQ(out.download()[1], want) << what;
      EXPECT_TRUE(tok.guards_intact() && out.guards_intact() && st.guards_intact()) << what;
    }
  }
}

}  // namespace
}  // namespace ao::cuda::testing

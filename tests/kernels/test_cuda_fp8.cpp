// Dynamic-activation fp8 on the GPU (Float8DynamicActivationFloat8WeightConfig): the activation
// quantizer against a scalar reference (and, in the main build, against the formats library's
// TorchAO-exact float8 code), the cuBLASLt FP8 GEMM and the fp8 GEMV with activation
// quantization against sum(qa * qw) * sa * sw in double. Skipped without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ao/core/error.h"
#include "ao/kernels/cuda/gemm_fp8.h"
#include "ao/runtime/cuda_weights.h"
#include "cuda_test_util.h"

#ifdef AO_BINARY_DIR  // main build: the CPU library is linked
#include "ao/formats/float8_scaling.h"
#endif

namespace ao::cuda::testing {
namespace {

using runtime::e4m3fn_to_float;

// Host reference of quantize_activation_fp8 on bf16 values x [M, K]: the e4m3 value of each
// element (x / scale, clamped, rounded) and the scale of each row.
struct QuantizedActivations {
  std::vector<float> value;  // [M, K]
  std::vector<float> scale;  // [M]
};
QuantizedActivations reference_quantize(const std::vector<float>& x, int m, int64_t k,
                                        bool per_tensor) {
  QuantizedActivations r{std::vector<float>(x.size()), std::vector<float>(m)};
  std::vector<float> amax(m, 0.f);
  for (int i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) amax[i] = std::max(amax[i], std::fabs(x[i * k + j]));
  const float all = *std::max_element(amax.begin(), amax.end());
  for (int i = 0; i < m; ++i) {
    const float s = round_bf16((per_tensor ? all : amax[i]) / 448.f);
    r.scale[i] = s;
    for (int64_t j = 0; j < k; ++j) {
      const float v = x[i * k + j];
      r.value[i * k + j] = s > 0.f ? e4m3_round(std::min(std::max(v / s, -448.f), 448.f)) : 0.f;
    }
  }
  return r;
}

// Rows chosen to hit the corners: ordinary, all zero (with a -0), an element that saturates
// (amax 450: bf16(450 / 448) = 1, so 450 / 1 clamps to 448) next to values in e4m3's subnormal
// range, tiny magnitudes.
std::vector<float> activation_rows(int m, int64_t k, uint32_t seed) {
  std::vector<float> x = randn(static_cast<size_t>(m) * k, seed, 2.f);
  for (auto& v : x) v = round_bf16(v);
  std::fill(x.begin() + k, x.begin() + 2 * k, 0.f);
  x[k + 3] = -0.f;
  for (int64_t j = 0; j < k; ++j) x[2 * k + j] = round_bf16(x[2 * k + j] * 1e-3f);
  x[2 * k + 5] = 450.f;
  x[2 * k + 6] = -448.f;
  for (int64_t j = 0; j < k; ++j) x[3 * k + j] = round_bf16(x[3 * k + j] * 1e-6f);
  return x;
}

void check_activation_quantization(ActQuant mode, const std::vector<float>& x, int m, int64_t k) {
  const bool per_tensor = mode == ActQuant::fp8_tensor;
  const int64_t qs = (k + 63) / 64 * 64 + 64;  // padded row stride: the tail must come back zero
  Guarded<uint16_t> dx(to_bf16(x));
  Guarded<uint8_t> dq(static_cast<size_t>(m) * qs);
  Guarded<float> dscale(m), dws(m);
  quantize_activation_fp8(dx.get(), k, m, k, mode, dq.get(), qs, dscale.get(), dws.get(), nullptr);
  const auto q = dq.download();
  const auto scale = dscale.download();
  EXPECT_TRUE(dq.guards_intact());
  EXPECT_TRUE(dscale.guards_intact());
  const auto ref = reference_quantize(x, m, k, per_tensor);
  for (int i = 0; i < m; ++i) {
    ASSERT_EQ(scale[i], ref.scale[i]) << "row " << i;
    for (int64_t j = 0; j < k; ++j) {
      const uint8_t c = q[i * qs + j];
      ASSERT_EQ(e4m3fn_to_float(c), ref.value[i * k + j]) << "row " << i << " col " << j;
      if (ref.scale[i] == 0.f) ASSERT_EQ(c, std::signbit(x[i * k + j]) ? 0x80 : 0x00);
    }
    for (int64_t j = k; j < qs; ++j) ASSERT_EQ(q[i * qs + j], 0) << "padding row " << i;
  }
#ifdef AO_BINARY_DIR
  // The formats library (bit-exact with TorchAO's fixtures) on the same bf16 input: same codes
  // and scales wherever the block is not all zero (there TorchAO's 0/0 gives NaN codes; we
  // define them as +-0, checked above).
  const auto xb = to_bf16(x);
  const formats::Block block =
      per_tensor ? formats::Block::per_tensor(m, k) : formats::Block::per_row(k);
  std::vector<float> fs(per_tensor ? 1 : m);
  std::vector<uint8_t> fq(static_cast<size_t>(m) * k);
  formats::float8_choose_scale(xb.data(), DType::bf16, m, k, block, formats::FloatFormat::f8_e4m3fn,
                               fs.data());
  formats::float8_quantize(xb.data(), DType::bf16, m, k, block, formats::FloatFormat::f8_e4m3fn,
                           fs.data(), fq.data());
  for (int i = 0; i < m; ++i) {
    const float s = fs[per_tensor ? 0 : i];
    ASSERT_EQ(scale[i], s) << "formats scale, row " << i;
    if (s == 0.f) continue;
    for (int64_t j = 0; j < k; ++j)
      ASSERT_EQ(q[i * qs + j], fq[i * k + j]) << "formats code, row " << i << " col " << j;
  }
#endif
}

TEST(CudaFp8, ActivationQuantPerRowMatchesCpu) {
  AO_SKIP_WITHOUT_GPU();
  for (int64_t k : {200, 4096})
    check_activation_quantization(ActQuant::fp8_row, activation_rows(7, k, 1), 7, k);
}

TEST(CudaFp8, ActivationQuantPerTensorMatchesCpu) {
  AO_SKIP_WITHOUT_GPU();
  for (int64_t k : {200, 4096})
    check_activation_quantization(ActQuant::fp8_tensor, activation_rows(7, k, 2), 7, k);
  // All zero (one -0): scale 0, codes +-0, no NaN.
  std::vector<float> z(3 * 48, 0.f);
  z[50] = -0.f;
  check_activation_quantization(ActQuant::fp8_tensor, z, 3, 48);
}

// An fp8 device weight quantized on the device from random bf16 values, with its decoded codes
// and scales downloaded for the reference.
struct Fp8Weight {
  DeviceWeight dw;
  std::unique_ptr<Guarded<uint8_t>> data;
  std::unique_ptr<Guarded<float>> scale;
  std::vector<float> values;  // e4m3 values of the codes [N, Kp]
  std::vector<float> scales;  // [N]
  Fp8Weight(int64_t n, int64_t k, bool per_tensor, ActQuant act, uint32_t seed) {
    dw.format = WeightFormat::fp8;
    dw.n = n;
    dw.k = k;
    const int al = gemv_k_align(WeightFormat::fp8);
    dw.k_padded = (k + al - 1) / al * al;
    dw.act_quant = act;
    dw.per_tensor_scale = per_tensor;
    data = std::make_unique<Guarded<uint8_t>>(static_cast<size_t>(n * dw.k_padded));
    scale = std::make_unique<Guarded<float>>(static_cast<size_t>(n));
    dw.data = data->get();
    dw.scale = scale->get();
    Guarded<uint16_t> src(to_bf16(randn(n * k, seed, 0.05f)));
    Guarded<float> amax(4);
    quantize_weight(src.get(), dw, per_tensor, amax.get(), nullptr);
    const auto codes = data->download();
    scales = scale->download();
    values.resize(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) values[i] = e4m3fn_to_float(codes[i]);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = k; j < dw.k_padded; ++j)
        EXPECT_EQ(codes[r * dw.k_padded + j], 0) << "weight padding must be zero";
  }
};

// Compares y [M, N] with sum_k qa qw * sa * sw (double), per element: the bound is `rel` of
// |ref| (output rounding) plus `acc` of sum_k |qa qw| * sa * sw (summation in fp32 / the FP8
// tensor-core accumulator).
void expect_scaled_mm(const std::vector<float>& y, const std::vector<float>& qa_values,
                      const std::vector<float>& sa, const Fp8Weight& w, int m, int64_t k,
                      double rel, double acc, const std::string& what) {
  const int64_t n = w.dw.n, kp = w.dw.k_padded;
  int bad = 0;
  double worst = 0;
  for (int i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double s = 0, sabs = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double t = static_cast<double>(qa_values[i * k + j]) * w.values[r * kp + j];
        s += t;
        sabs += std::fabs(t);
      }
      const double scale = static_cast<double>(sa[i]) * w.scales[r];
      const double ref = s * scale, err = std::fabs(y[i * n + r] - ref);
      const double bound = rel * std::fabs(ref) + acc * sabs * scale + 1e-30;
      worst = std::max(worst, err / bound);
      if (err > bound && ++bad <= 5)
        ADD_FAILURE() << what << ": y[" << i << ", " << r << "] = " << y[i * n + r] << ", want "
                      << ref << " (bound " << bound << ")";
    }
  EXPECT_EQ(bad, 0) << what;
  std::printf("%s: worst error / bound %.3f\n", what.c_str(), worst);
}

struct GemmCase {
  bool act_per_tensor, weight_per_tensor;
  bool fast_accum;
  bool force_epilogue;
};

TEST(CudaFp8, GemmMatchesScaledMmReference) {
  AO_SKIP_WITHOUT_GPU();
  // Per-row (outer vectors), per-tensor (scalars), per-tensor activations with a per-row weight
  // (outer vectors, m equal activation scales: fused q/k/v of a per-tensor checkpoint), with
  // and without fast accumulation, and the epilogue fallback forced.
  const GemmCase cases[] = {{false, false, true, false}, {true, true, true, false},
                            {true, false, true, false},  {false, false, false, false},
                            {true, true, false, false},  {false, false, true, true},
                            {true, true, true, true}};
  struct Shape {
    int64_t n, k;
  };
  for (const GemmCase& c : cases) {
    Fp8GemmOptions opt;
    opt.fast_accum = c.fast_accum;
    opt.force_epilogue = c.force_epilogue;
    Fp8Gemm gemm(opt);
    const ActQuant mode = c.act_per_tensor ? ActQuant::fp8_tensor : ActQuant::fp8_row;
    const bool scalar = c.act_per_tensor && c.weight_per_tensor;
    for (const Shape sh : {Shape{256, 512}, Shape{96, 200}, Shape{528, 1024}}) {
      const Fp8Weight w(sh.n, sh.k, c.weight_per_tensor, mode, static_cast<uint32_t>(sh.n + sh.k));
      const int64_t kp = w.dw.k_padded;
      for (int m : {9, 64, 512}) {
        std::vector<float> x = randn(static_cast<size_t>(m) * sh.k, 100 + m, 1.5f);
        for (auto& v : x) v = round_bf16(v);
        Guarded<uint16_t> dx(to_bf16(x));
        Guarded<uint8_t> dq(static_cast<size_t>(m) * kp);
        Guarded<float> dscale(m), dws(m);
        Guarded<uint16_t> dy(static_cast<size_t>(m) * sh.n);
        quantize_activation_fp8(dx.get(), sh.k, m, sh.k, mode, dq.get(), kp, dscale.get(),
                                dws.get(), nullptr);
        gemm.run(w.dw, dq.get(), dscale.get(), m, scalar, dy.get(), nullptr);
        const auto y = from_bf16(dy.download());
        EXPECT_TRUE(dy.guards_intact());
        const auto q = dq.download();
        std::vector<float> qa(static_cast<size_t>(m) * sh.k);
        for (int i = 0; i < m; ++i)
          for (int64_t j = 0; j < sh.k; ++j) qa[i * sh.k + j] = e4m3fn_to_float(q[i * kp + j]);
        const std::string what = std::string("fp8 gemm act ") +
                                 (c.act_per_tensor ? "per-tensor" : "per-row") + " weight " +
                                 (c.weight_per_tensor ? "per-tensor" : "per-row") +
                                 (c.fast_accum ? " fast-accum" : "") + " [" +
                                 fp8_gemm_path_name(gemm.last_path()) + "] M " + std::to_string(m) +
                                 " N " + std::to_string(sh.n) + " K " + std::to_string(sh.k);
        // bf16 output: half an ulp is at most 2^-8 of the value. Hopper's FP8 tensor cores add
        // products with ~14 bits inside an MMA (DeepSeek-V3 report, section 3.3.2); without
        // fast accumulation the partial sums are promoted to fp32 every few MMAs, with it they
        // stay in the tensor core: bounds on sum |qa qw| of 2e-4 and 4e-3 (a wrong scale or a
        // wrong row is off by O(1)).
        expect_scaled_mm(y, qa, dscale.download(), w, m, sh.k, 1.0 / 256,
                         c.fast_accum ? 4e-3 : 2e-4, what);
      }
      if (c.force_epilogue)
        EXPECT_EQ(gemm.last_path(), Fp8GemmPath::epilogue_scales);
      else
        EXPECT_NE(gemm.last_path(), Fp8GemmPath::none);
    }
  }
  // Scalar scales on a weight whose rows differ are refused.
  const Fp8Weight rows(64, 512, false, ActQuant::fp8_tensor, 3);
  Fp8Gemm gemm;
  EXPECT_THROW(gemm.run(rows.dw, nullptr, nullptr, 16, true, nullptr, nullptr), ao::Error);
}

TEST(CudaFp8, GemvWithActivationQuantMatchesReference) {
  AO_SKIP_WITHOUT_GPU();
  // K = 200: one padded segment; K = 4608: several segments of x from M = 4 on (the scale
  // pre-pass covers all of K).
  for (const int64_t k : {200, 4608}) {
    const int64_t n = 203;
    for (const bool per_tensor : {false, true}) {
      const ActQuant mode = per_tensor ? ActQuant::fp8_tensor : ActQuant::fp8_row;
      const Fp8Weight w(n, k, per_tensor, mode, 7);
      for (int m = 1; m <= 8; ++m) {
        std::vector<float> x = activation_rows(std::max(m, 4), k, 40 + m);
        x.resize(static_cast<size_t>(m) * k);
        if (m < 4) std::copy(x.begin() + 2 * k, x.begin() + 3 * k, x.begin());  // saturating row
        Guarded<uint16_t> dx(to_bf16(x));
        Guarded<float> dy(static_cast<size_t>(m) * n);
        GemvArgs a;
        a.m = m;
        a.x = dx.get();
        a.output = GemvOutput::f32;
        a.y = dy.get();
        if (per_tensor && (m & (m - 1)) != 0) {
          EXPECT_THROW(gemv(w.dw, a, nullptr), ao::Error) << "m=" << m;
          continue;
        }
        gemv(w.dw, a, nullptr);
        const auto y = dy.download();
        EXPECT_TRUE(dy.guards_intact());
        const auto ref = reference_quantize(x, m, k, per_tensor);
        expect_scaled_mm(y, ref.value, ref.scale, w, m, k, 1e-6, 2e-5,
                         std::string("fp8 gemv act ") + (per_tensor ? "per-tensor" : "per-row") +
                             " M " + std::to_string(m) + " K " + std::to_string(k));
      }
    }
  }
}

TEST(CudaFp8, GemvActivationQuantAfterRmsnormAndSwiglu) {
  AO_SKIP_WITHOUT_GPU();
  const int64_t n = 130, k = 1024;
  const Fp8Weight w(n, k, false, ActQuant::fp8_row, 9);
  for (int m : {1, 2}) {
    const auto resid = randn(static_cast<size_t>(m) * k, 60 + m, 3.f);
    const auto nw = norm_weight_bf16(k, 61);
    const auto xn = reference_rmsnorm(resid, m, k, nw);
    const auto q = reference_quantize(xn, m, k, false);
    auto dot = [&](int i, int64_t r) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j)
        s += static_cast<double>(q.value[i * k + j]) * w.values[r * w.dw.k_padded + j];
      return static_cast<float>(s * q.scale[i] * w.scales[r]);
    };
    Guarded<float> dres(resid);
    Guarded<uint16_t> dnw(nw);
    // RMSNorm prologue, f32 output. The device's rsqrtf may move an element across a bf16
    // rounding boundary (then its e4m3 code can differ by one step): an NMSE bound, far below
    // what skipping the activation quantization costs (~1e-3).
    Guarded<float> dy(static_cast<size_t>(m) * n);
    const GemvArgs a = rmsnorm_gemv_args(m, dres.get(), dnw.get(), GemvOutput::f32, dy.get());
    gemv(w.dw, a, nullptr);
    std::vector<float> ref(static_cast<size_t>(m) * n);
    for (int i = 0; i < m; ++i)
      for (int64_t r = 0; r < n; ++r) ref[i * n + r] = dot(i, r);
    const double e = nmse(dy.download(), ref);
    EXPECT_LT(e, 2e-5) << "rmsnorm m=" << m;
    // SwiGLU epilogue: the activation scale applies before the gate / up rounding.
    Guarded<uint16_t> dh(static_cast<size_t>(m) * n / 2);
    GemvArgs b = a;
    b.output = GemvOutput::swiglu;
    b.y = dh.get();
    gemv(w.dw, b, nullptr);
    const auto h = from_bf16(dh.download());
    EXPECT_TRUE(dh.guards_intact());
    std::vector<float> href(h.size());
    for (int i = 0; i < m; ++i)
      for (int64_t j = 0; j < n / 2; ++j) {
        const float g = round_bf16(dot(i, 2 * j)), u = round_bf16(dot(i, 2 * j + 1));
        href[i * (n / 2) + j] = round_bf16(round_bf16(g / (1.f + std::exp(-g))) * u);
      }
    EXPECT_LT(nmse(h, href), 1e-4) << "swiglu m=" << m;
  }
}

TEST(CudaFp8, ActivationQuantNeedsFp8Weight) {
  AO_SKIP_WITHOUT_GPU();
  DeviceWeight w;
  w.format = WeightFormat::int8;
  w.act_quant = ActQuant::fp8_row;
  GemvArgs a;
  EXPECT_THROW(gemv(w, a, nullptr), ao::Error);
}

}  // namespace
}  // namespace ao::cuda::testing

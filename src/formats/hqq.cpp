// HQQ int4 qparams (TorchAO 0.18 _choose_qparams_and_quantize_affine_hqq +
// optimize_weights_proximal_legacy). Every step below is one PyTorch op in TorchAO's code; the
// comments quote it. This file must not be compiled with FP contraction (no FMA): each op is
// rounded on its own, as PyTorch's eager kernels do.
#include "ao/formats/hqq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ao/core/error.h"
#include "ao/core/parallel.h"
#include "ao/formats/float_formats.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace ao::formats {

namespace {

// ---- torch's CPU float sum (aten/src/ATen/native/cpu/SumKernel.cpp, cascade_sum) -----------
// The order of additions of a contiguous inner reduction of `n` floats, with vectors of
// `lanes` floats, as one thread runs it: a 4-way ILP row of vectors reduced by the
// multi-level accumulator of multi_row_sum, then the scalar tail, then the lanes in order.

int64_t ceil_log2(int64_t x) {  // at::native::utils::CeilLog2
  if (x <= 2) return 1;
  return 64 - __builtin_clzll(static_cast<uint64_t>(x - 1));
}

constexpr int kLanes = 8;  // torch 2.11's CPU float sum: 8-lane vectors on every dispatch
constexpr int kIlp = 4;    // row_sum's ILP factor = multi_row_sum's nrows

// multi_row_sum<acc, nrows = 4> over `size` steps; `load(i, r, l)` gives the element of step
// i, row r, lane l (lanes = 1 or kLanes). out[r * lanes + l].
template <int lanes, typename Load>
void multi_row_sum(int64_t size, Load&& load, float* out) {
  constexpr int kLevels = 4;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(size) / kLevels);
  const int64_t level_step = int64_t{1} << level_power;
  const int64_t level_mask = level_step - 1;
  float acc[kLevels][kIlp][lanes] = {};
  int64_t i = 0;
  for (; i + level_step <= size;) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int r = 0; r < kIlp; ++r)
        for (int l = 0; l < lanes; ++l) acc[0][r][l] += load(i, r, l);
    for (int j = 1; j < kLevels; ++j) {
      for (int r = 0; r < kIlp; ++r)
        for (int l = 0; l < lanes; ++l) {
          acc[j][r][l] += acc[j - 1][r][l];
          acc[j - 1][r][l] = 0.0f;
        }
      const int64_t mask = level_mask << (j * level_power);
      if ((i & mask) != 0) break;
    }
  }
  for (; i < size; ++i)
    for (int r = 0; r < kIlp; ++r)
      for (int l = 0; l < lanes; ++l) acc[0][r][l] += load(i, r, l);
  for (int j = 1; j < kLevels; ++j)
    for (int r = 0; r < kIlp; ++r)
      for (int l = 0; l < lanes; ++l) acc[0][r][l] += acc[j][r][l];
  for (int r = 0; r < kIlp; ++r)
    for (int l = 0; l < lanes; ++l) out[r * lanes + l] = acc[0][r][l];
}

// row_sum over `count` items of `lanes` floats each (item i starts at x + i * lanes).
template <int lanes>
void row_sum(const float* x, int64_t count, float* out /* [lanes] */) {
  const int64_t size_ilp = count / kIlp;
  float partial[kIlp * lanes];
  multi_row_sum<lanes>(
      size_ilp, [&](int64_t i, int r, int l) { return x[(i * kIlp + r) * lanes + l]; }, partial);
  for (int64_t i = size_ilp * kIlp; i < count; ++i)
    for (int l = 0; l < lanes; ++l) partial[l] += x[i * lanes + l];
  for (int r = 1; r < kIlp; ++r)
    for (int l = 0; l < lanes; ++l) partial[l] += partial[r * lanes + l];
  for (int l = 0; l < lanes; ++l) out[l] = partial[l];
}

float torch_cpu_sum(const float* x, int64_t n) {
  if (n >= kLanes) {  // vectorized_inner_sum
    const int64_t vec_count = n / kLanes;
    float v[kLanes];
    row_sum<kLanes>(x, vec_count, v);
    float acc = 0.0f;
    for (int64_t k = vec_count * kLanes; k < n; ++k) acc += x[k];
    for (int l = 0; l < kLanes; ++l) acc += v[l];
    return 0.0f + acc;  // the output is zero-filled, then accumulated into
  }
  float s;  // scalar_inner_sum: row_sum<float> of single elements
  row_sum<1>(x, n, &s);
  return 0.0f + s;
}

// ---- fp16 rounding (the CUDA optimizer's dtype) --------------------------------------------
// Round to the nearest fp16 value, ties to even, as a float (IEEE f32 -> f16 -> f32): in the
// normal range by rounding the f32 mantissa at bit 13 (a carry moves into the exponent, which is
// right); below 2^-14 (f16 subnormals, multiples of 2^-24) by one f32 addition of 0.5, whose ulp
// is 2^-24; from 65520 (halfway to 65536) on, infinity. Integer ops only on the hot path (the
// frexp/ldexp form took most of the CUDA-mode optimizer's time).
float round_to_f16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = u & 0x80000000u, a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return x;  // inf, NaN
  if (a >= 0x477ff000u) return std::copysign(std::numeric_limits<float>::infinity(), x);
  if (a < 0x38800000u) {  // below 2^-14
    float f;
    std::memcpy(&f, &a, 4);
    return std::copysign((f + 0.5f) - 0.5f, x);
  }
  uint32_t r = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu;
  r |= sign;
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}

// pow(|x|, p) as the torch kernels compute it, up to their last-bit errors: the exact power
// rounded to float (torch CPU's Sleef_powf_u10 differs in ~1.4% of inputs by 1 ulp).
inline float pow_f32(float a, float p) {
  return static_cast<float>(std::pow(static_cast<double>(a), static_cast<double>(p)));
}

// torch.round (nearest, ties to even) without a libm call: adding 1.5 * 2^23 leaves a float
// whose ulp is 1 for |v| < 2^22; larger values (already integers), inf and NaN go to nearbyint.
// The sign of a zero result is kept as nearbyint keeps it.
inline float round_even(float v) {
  if (!(std::fabs(v) < 4194304.0f)) return std::nearbyint(v);
  return std::copysign((v + 12582912.0f) - 12582912.0f, v);
}

inline float torch_sign(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }
inline float relu(float v) { return v != v ? v : (v > 0.0f ? v : 0.0f); }
inline float clamp015(float v) { return v != v ? v : std::min(std::max(v, 0.0f), 15.0f); }

}  // namespace

HqqStats hqq_quantize_int4(const void* x, DType x_dtype, int64_t n, int64_t k, int64_t group_size,
                           uint8_t* q, float* scale, float* zero, const HqqOptions& o) {
  AO_CHECK(x_dtype == DType::f32 || x_dtype == DType::bf16,
           "hqq_quantize_int4: dtype must be f32 or bf16, got {}", dtype_name(x_dtype));
  AO_CHECK(n > 0 && k > 0, "hqq_quantize_int4: shape [{}, {}] must be positive", n, k);
  AO_CHECK(group_size >= 2 && k % group_size == 0,
           "hqq_quantize_int4: group size {} must be >= 2 and divide K = {}", group_size, k);
  AO_CHECK(o.iters >= 0 && o.beta > 0 && o.kappa > 0,
           "hqq_quantize_int4: iters must be >= 0 and beta, kappa > 0");
  AO_CHECK(o.backend == HqqBackend::cpu || o.backend == HqqBackend::cuda,
           "hqq_quantize_int4: unknown backend");

  const int64_t gs = group_size, total = n * k, groups = total / gs;
  const bool f16 = o.backend == HqqBackend::cuda;
  // Rounding to the optimizer dtype (f32 on CPU, f16 on CUDA) after every op.
  auto R = [f16](float v) { return f16 ? round_to_f16(v) : v; };

  // W = tensor.to(float32).reshape([-1, group_size])
  std::vector<float> W(static_cast<size_t>(total));
  if (x_dtype == DType::f32) {
    std::memcpy(W.data(), x, sizeof(float) * total);
  } else {
    const auto* p = static_cast<const uint16_t*>(x);
    for (int64_t i = 0; i < total; ++i) W[i] = bf16_bits_to_f32(p[i]);
  }

  // _min/_max per group (f32); scale = (max_v / (_max - _min)).clamp(max=2e4), where
  // `15 / t` is t.reciprocal() * 15; zero = round(-_min * scale).
  std::vector<float> s(static_cast<size_t>(groups)), z(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    const float* w = W.data() + g * gs;
    float mn = w[0], mx = w[0];
    for (int64_t j = 1; j < gs; ++j) {
      if (w[j] != w[j] || mn != mn)
        mn = std::numeric_limits<float>::quiet_NaN();
      else
        mn = std::min(mn, w[j]);
      if (w[j] != w[j] || mx != mx)
        mx = std::numeric_limits<float>::quiet_NaN();
      else
        mx = std::max(mx, w[j]);
    }
    const float d = mx - mn;
    float sc = (1.0f / d) * 15.0f;
    if (sc > 2e4f) sc = 2e4f;  // clamp(max=2e4) (NaN stays NaN)
    s[g] = sc;
    z[g] = std::nearbyint(-mn * sc);
  }

  HqqStats stats;
  // The optimizer's copy of W in its dtype (W_f = tensor.to(dtype)); scale/zero likewise.
  std::vector<float> Wf(W);
  if (f16)
    for (auto& v : Wf) v = round_to_f16(v);
  if (o.optimize) {
    for (auto& v : s) v = R(v);
    for (auto& v : z) v = R(v);
    std::vector<float> abs_err(static_cast<size_t>(total));
    double beta = o.beta;
    double best_error = 1e4;
    const float p = f16 ? round_to_f16(static_cast<float>(o.lp_norm - 1.0))
                        : static_cast<float>(o.lp_norm - 1.0);
    for (int it = 0; it < o.iters; ++it) {
      const float inv_beta = static_cast<float>(1.0 / beta);
      // Groups are independent within a step (threads only for large weights); the error
      // mean below keeps torch's order.
      auto step = [&](int64_t g0, int64_t g1) {
        std::vector<float> term(static_cast<size_t>(gs));
        for (int64_t g = g0; g < g1; ++g) {
          const float* w = Wf.data() + g * gs;
          const float sc = s[g], zr = z[g];
          for (int64_t j = 0; j < gs; ++j) {
            // W_q = torch.round(W_f * scale + zero).clamp(0, 15)
            const float wq = clamp015(R(round_even(R(R(w[j] * sc) + zr))));
            // W_r = (W_q - zero) / scale
            const float wr = R(R(wq - zr) / sc);
            const float e = R(w[j] - wr);
            const float ae = std::fabs(e);
            abs_err[g * gs + j] = ae;
            // W_e = sign(e) * relu(|e| - (1 / beta) * pow(|e|, lp_norm - 1))
            const float shr = relu(R(ae - R(inv_beta * R(pow_f32(ae, p)))));
            const float we = R(torch_sign(e) * shr);
            // W_q - (W_f - W_e) * scale
            term[j] = R(wq - R(R(w[j] - we) * sc));
          }
          // zero = torch.mean(..., axis=1, keepdim=True)
          if (f16) {
            double acc = 0;  // CUDA: float accumulation in its own order; see FORMATS.md
            for (int64_t j = 0; j < gs; ++j) acc += term[j];
            z[g] = round_to_f16(static_cast<float>(acc) * static_cast<float>(1.0 / gs));
          } else {
            z[g] = torch_cpu_sum(term.data(), gs) / static_cast<float>(gs);
          }
        }
      };
      if (total >= (int64_t{1} << 20))
        ao::parallel_for(0, groups, std::max<int64_t>(1, 16384 / gs), step);
      else
        step(0, groups);
      beta *= o.kappa;
      // current_error = float(torch.abs(W_f - W_r).mean())
      float err;
      if (f16) {
        double acc = 0;
        for (int64_t i = 0; i < total; ++i) acc += abs_err[i];
        err = round_to_f16(static_cast<float>(acc) / static_cast<float>(total));
      } else {
        err = torch_cpu_sum(abs_err.data(), total) / static_cast<float>(total);
      }
      stats.iterations = it + 1;
      stats.last_error = err;
      if (o.early_stop) {
        if (err < best_error)
          best_error = err;
        else
          break;
      }
    }
  } else {
    // optimize=False: zero/scale .to(compute_dtype), then round(W * scale + zero)
    for (auto& v : s) v = x_dtype == DType::bf16 ? round_to_bf16(v) : v;
    for (auto& v : z) v = x_dtype == DType::bf16 ? round_to_bf16(v) : v;
  }
  // Rounding to the dtype scale/zero are held in from here on.
  auto Rq = [&](float v) {
    if (o.optimize) return R(v);
    return x_dtype == DType::bf16 ? round_to_bf16(v) : v;
  };

  // W_q = torch.round(tensor * scale + zero).clamp(0, 15) with the f32 W (scale/zero promoted)
  for (int64_t g = 0; g < groups; ++g) {
    const float* w = W.data() + g * gs;
    for (int64_t j = 0; j < gs; ++j) {
      const float v = clamp015(round_even(w[j] * s[g] + z[g]));
      q[g * gs + j] = v != v ? 0 : static_cast<uint8_t>(v);
    }
  }
  // scale = 1.0 / scale (reciprocal in the optimizer dtype); zero_ao = ((8 - zero.float()) *
  // scale.float()).to(zero.dtype); then both .to(compute_dtype).
  for (int64_t g = 0; g < groups; ++g) {
    const float sc = Rq(1.0f / s[g]);
    const float za = Rq((8.0f - z[g]) * sc);
    scale[g] = x_dtype == DType::bf16 ? round_to_bf16(sc) : sc;
    zero[g] = x_dtype == DType::bf16 ? round_to_bf16(za) : za;
  }
  return stats;
}

}  // namespace ao::formats

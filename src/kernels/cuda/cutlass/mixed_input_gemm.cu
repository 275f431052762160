// CUTLASS's sm90 mixed-input GEMM for the quantized prefill (see ../mixed_input_gemm.h). Built as
// its own object library for sm_90a only, and only when CMake found CUTLASS's headers.
#include "../mixed_input_gemm.h"

#include <mutex>
#include <string>

#include "ao/kernels/cuda/kernels.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace ao::cuda {
namespace {

using namespace cute;
using Bf = cutlass::bfloat16_t;

// The weight is CUTLASS's A operand (K-major, the narrow type goes through registers); x is B,
// seen as a [k, m] column-major matrix; the output is y^T [n, m] column-major, i.e. y [m, n]
// row-major. The scale (and zero) planes are MN-major ([k / g][n], n fastest).
template <class Narrow, bool kZero, class TileShape>
struct MixedGemm {
  using LayoutW = cutlass::layout::RowMajor;
  using LayoutX = cutlass::layout::ColumnMajor;
  using LayoutY = cutlass::layout::ColumnMajor;
  static constexpr int kAlignW = 128 / cutlass::sizeof_bits<Narrow>::value;
  using WeightTuple = cute::conditional_t<kZero, cute::tuple<Narrow, Bf, Bf>, cute::tuple<Narrow, Bf>>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Shape<_1, _1, _1>,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, Bf, LayoutY, 8, Bf, LayoutY,
      8, cutlass::epilogue::TmaWarpSpecializedCooperative>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, WeightTuple, LayoutW, kAlignW, Bf,
      LayoutX, 8, float, TileShape, Shape<_1, _1, _1>,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const MixedInputGemmArgs& a) {
    const int n = static_cast<int>(a.n), k = static_cast<int>(a.k), m = a.m;
    typename Mainloop::StrideA dw = make_stride(a.k_padded, _1{}, int64_t{0});
    typename Mainloop::StrideB dx = make_stride(a.k, _1{}, int64_t{0});
    typename Mainloop::StrideScale ds = make_stride(_1{}, a.ld_sz, int64_t{0});
    typename Kernel::StrideD dy = make_stride(_1{}, a.n, int64_t{0});
    auto* y = reinterpret_cast<Bf*>(a.y);
    const auto* w = reinterpret_cast<const Narrow*>(a.w);
    const auto* x = reinterpret_cast<const Bf*>(a.x);
    const auto* s = reinterpret_cast<const Bf*>(a.s);
    if constexpr (kZero)
      return typename Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGemm,
                                      {n, m, k, 1},
                                      {w, dw, x, dx, s, ds, a.group_size,
                                       reinterpret_cast<const Bf*>(a.z)},
                                      {{1.f, 0.f}, y, dy, y, dy}};
    else  // one scale per row: a group of the whole K
      return typename Gemm::Arguments{cutlass::gemm::GemmUniversalMode::kGemm,
                                      {n, m, k, 1},
                                      {w, dw, x, dx, s, ds, k},
                                      {{1.f, 0.f}, y, dy, y, dy}};
  }
};

// The GEMM's workspace (none for these data-parallel kernels, kept general).
std::mutex g_ws_mutex;
void* g_ws = nullptr;
size_t g_ws_bytes = 0;

template <class G>
void run_gemm(const MixedInputGemmArgs& a, cudaStream_t s) {
  typename G::Gemm gemm;
  const auto args = G::arguments(a);
  if (gemm.can_implement(args) != cutlass::Status::kSuccess)
    fail(("mixed-input GEMM: CUTLASS refuses the weight [" + std::to_string(a.n) + ", " +
          std::to_string(a.k) + "]")
             .c_str());
  const size_t need = G::Gemm::get_workspace_size(args);
  std::lock_guard<std::mutex> lock(g_ws_mutex);
  if (need > g_ws_bytes) {
    if (g_ws) AO_CUDA_CHECK(cudaFree(g_ws));
    g_ws = nullptr;
    g_ws_bytes = 0;
    AO_CUDA_CHECK(cudaMalloc(&g_ws, need));
    g_ws_bytes = need;
  }
  if (gemm.initialize(args, g_ws, s) != cutlass::Status::kSuccess ||
      gemm.run(s) != cutlass::Status::kSuccess)
    fail("mixed-input GEMM: launch failed");
  AO_CUDA_CHECK(cudaGetLastError());
}

// 128 x 256 tiles (rows of W x tokens) unless they would leave most SMs idle: measured faster
// for every llama3-8b int4 GEMM at 2048 tokens and for qkv / gate_up at 512, slower for o and
// down at 512 (64 tiles of 128 x 256), docs/CUDA.md lab note 96.
template <class Narrow, bool kZero>
void run_tiled(const MixedInputGemmArgs& a, cudaStream_t s) {
  const int64_t tiles_256 = (a.n + 127) / 128 * ((a.m + 255) / 256);
  if (tiles_256 <= 64)
    run_gemm<MixedGemm<Narrow, kZero, Shape<_128, _128, _64>>>(a, s);
  else
    run_gemm<MixedGemm<Narrow, kZero, Shape<_128, _256, _64>>>(a, s);
}

}  // namespace

bool mixed_input_gemm_available() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;
}

bool mixed_input_gemm_fits(MixedInput kind, int64_t n, int64_t k, int64_t k_padded,
                           int group_size) {
  if (n % 8 != 0 || k_padded < k || n > INT32_MAX || k > INT32_MAX || k < 1) return false;
  if (kind == MixedInput::uint4_zero)
    return group_size >= 64 && group_size % 64 == 0 && k % 64 == 0 && k_padded % 32 == 0;
  return k % 16 == 0 && k_padded % 16 == 0;
}

void mixed_input_gemm(const MixedInputGemmArgs& a, cudaStream_t s) {
  if (!mixed_input_gemm_fits(a.kind, a.n, a.k, a.k_padded, a.group_size) || a.m < 1 ||
      a.ld_sz < a.n || a.ld_sz % 8 != 0)
    fail("mixed-input GEMM: unsupported shape");
  switch (a.kind) {
    case MixedInput::uint4_zero:
      return run_tiled<cutlass::uint4b_t, true>(a, s);
    case MixedInput::int8_scale:
      return run_tiled<int8_t, false>(a, s);
    case MixedInput::e4m3_scale:
      return run_tiled<cutlass::float_e4m3_t, false>(a, s);
  }
  fail("mixed-input GEMM: unknown weight kind");
}

}  // namespace ao::cuda

// Chunked dequantize-then-GEMM for prefill; see include/ao/kernels/cuda/gemm_dequant.h.
#include "ao/kernels/cuda/gemm_dequant.h"

#include <algorithm>

#include "ao/core/error.h"
#include "ao/kernels/cuda/cublas_check.h"
#include "mixed_input_gemm.h"

namespace ao::cuda {

namespace {
DequantGemmTuning g_tuning;
constexpr int64_t kChunkRowAlign = 128;
}  // namespace

void set_dequant_gemm_tuning(const DequantGemmTuning& t) { g_tuning = t; }
DequantGemmTuning dequant_gemm_tuning() { return g_tuning; }

DequantChunks plan_dequant_chunks(int64_t n, int64_t k_padded, int64_t chunk_bytes) {
  AO_CHECK(n >= 1 && k_padded >= 1, "plan_dequant_chunks: bad weight shape [{}, {}]", n, k_padded);
  const int64_t row_bytes = k_padded * 2;
  if (chunk_bytes <= 0 || n * row_bytes <= chunk_bytes) return {n, 1};
  const int64_t max_rows =
      std::max(kChunkRowAlign, chunk_bytes / row_bytes / kChunkRowAlign * kChunkRowAlign);
  const int64_t count = (n + max_rows - 1) / max_rows;
  const int64_t even = (n + count - 1) / count;
  const int64_t rows = (even + kChunkRowAlign - 1) / kChunkRowAlign * kChunkRowAlign;
  return {std::min(rows, n), (n + rows - 1) / rows};
}

#ifndef AO_WITH_CUTLASS
// This build has no CUTLASS: every quantized weight takes the bf16 copy.
bool mixed_input_gemm_available() { return false; }
bool mixed_input_gemm_fits(MixedInput, int64_t, int64_t, int64_t, int) { return false; }
void mixed_input_gemm(const MixedInputGemmArgs&, cudaStream_t) {
  fail("mixed-input GEMM: this build has no CUTLASS (scripts/setup-deps.sh fetches it)");
}
#endif

bool fused_gemm_available() { return mixed_input_gemm_available(); }

namespace {
MixedInput mixed_kind(const DeviceWeight& w) {
  return w.format == WeightFormat::int4   ? MixedInput::uint4_zero
         : w.format == WeightFormat::int8 ? MixedInput::int8_scale
                                          : MixedInput::e4m3_scale;
}
}  // namespace

DequantGemm::DequantGemm() : fused_device_(mixed_input_gemm_available()) {}
DequantGemm::~DequantGemm() {
  if (scratch_ || !planes_.empty()) cudaDeviceSynchronize();  // a GEMM may still read them
  if (scratch_) cudaFree(scratch_);
  for (auto& [key, p] : planes_) cudaFree(p.s);
}

bool DequantGemm::takes_fused(const DeviceWeight& w) const {
  return fused_device_ && g_tuning.fused && w.format != WeightFormat::bf16 &&
         w.act_quant == ActQuant::none &&
         mixed_input_gemm_fits(mixed_kind(w), w.n, w.k, w.k_padded, w.group_size);
}

bool DequantGemm::fused(const DeviceWeight& w) const {
  if (!takes_fused(w)) return false;
  const auto it = planes_.find(w.data);
  if (it == planes_.end()) return false;
  const Planes& p = it->second;
  return p.format == w.format && p.scale == w.scale && p.n == w.n &&
         p.k_padded == w.k_padded && p.group_size == w.group_size;
}

namespace {
// Elements of the scratch that `w` needs under tuning `t` (0 for bf16 weights).
size_t scratch_elems(const DeviceWeight& w, const DequantGemmTuning& t) {
  if (w.format == WeightFormat::bf16) return 0;
  return static_cast<size_t>(plan_dequant_chunks(w.n, w.k_padded, t.chunk_bytes).rows * w.k_padded);
}
}  // namespace

void DequantGemm::reserve(const DeviceWeight& w) {
  if (!takes_fused(w)) {
    reserve_scratch(w);
    return;
  }
  if (fused(w)) return;
  Planes p;
  p.ld = (w.n + 7) / 8 * 8;
  p.format = w.format;
  p.scale = w.scale;
  p.n = w.n;
  p.k_padded = w.k_padded;
  p.group_size = w.group_size;
  const bool int4 = w.format == WeightFormat::int4;
  const int64_t groups = int4 ? w.k_padded / w.group_size : 1;
  p.bytes = static_cast<size_t>((int4 ? 2 : 1) * groups * p.ld) * 2;
  auto it = planes_.find(w.data);
  if (it != planes_.end()) {  // made for another weight at the same address
    AO_CUDA_CHECK(cudaDeviceSynchronize());
    AO_CUDA_CHECK(cudaFree(it->second.s));
    planes_.erase(it);
  }
  AO_CUDA_CHECK(cudaMalloc(&p.s, p.bytes));
  // The weight's scales may still be in flight on the caller's stream (an upload, a quantize
  // kernel): the planes read them only after everything queued so far.
  AO_CUDA_CHECK(cudaDeviceSynchronize());
  if (int4)
    int4_scale_planes(w, p.s, p.s + groups * p.ld, p.ld, nullptr);
  else
    row_scale_plane(w, p.s, p.ld, nullptr);
  AO_CUDA_CHECK(cudaDeviceSynchronize());
  planes_.emplace(w.data, p);
}

size_t DequantGemm::plane_bytes() const {
  size_t b = 0;
  for (const auto& [key, p] : planes_) b += p.bytes;
  return b;
}

void DequantGemm::reserve_scratch(const DeviceWeight& w) {
  const size_t elems = scratch_elems(w, g_tuning);
  if (elems <= cap_elems_) return;
  if (scratch_) {
    AO_CUDA_CHECK(cudaDeviceSynchronize());  // a previous run may still read the old scratch
    AO_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    cap_elems_ = 0;
  }
  AO_CUDA_CHECK(cudaMalloc(&scratch_, elems * 2));
  cap_elems_ = elems;
}
size_t DequantGemm::scratch_bytes() const { return cap_elems_ * 2; }

void DequantGemm::run(cublasHandle_t h, const DeviceWeight& w, const uint16_t* x, int m, void* y,
                      cudaDataType out_type, cudaStream_t s) {
  AO_CHECK(out_type == CUDA_R_16BF || out_type == CUDA_R_32F,
           "DequantGemm: output must be bf16 or f32");
  AO_CHECK(m >= 1 && w.n <= INT32_MAX && w.k_padded <= INT32_MAX, "DequantGemm: bad shape");
  const size_t out_elem = out_type == CUDA_R_32F ? 4 : 2;
  const float alpha = 1.f, beta = 0.f;
  // Rows [r0, r0 + rows) of y from their bf16 weight rows at `wp` (row stride k_padded).
  auto gemm = [&](const void* wp, int64_t r0, int64_t rows) {
    AO_CUBLAS_CHECK(cublasGemmEx(
        h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), m, static_cast<int>(w.k), &alpha, wp,
        CUDA_R_16BF, static_cast<int>(w.k_padded), x, CUDA_R_16BF, static_cast<int>(w.k), &beta,
        static_cast<char*>(y) + static_cast<size_t>(r0) * out_elem, out_type,
        static_cast<int>(w.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  if (w.format == WeightFormat::bf16) {
    gemm(w.data, 0, w.n);
    return;
  }
  if (out_type == CUDA_R_16BF && takes_fused(w)) {
    reserve(w);  // no-op once the engine has reserved for its weights under this tuning
    const Planes& p = planes_.at(w.data);
    MixedInputGemmArgs a;
    a.kind = mixed_kind(w);
    a.w = w.data;
    a.s = p.s;
    if (a.kind == MixedInput::uint4_zero) a.z = p.s + (w.k_padded / w.group_size) * p.ld;
    a.ld_sz = p.ld;
    a.n = w.n;
    a.k = w.k;
    a.k_padded = w.k_padded;
    a.group_size = w.group_size;
    a.x = x;
    a.m = m;
    a.y = static_cast<uint16_t*>(y);
    mixed_input_gemm(a, s);
    return;
  }
  reserve_scratch(w);  // no-op once the engine has reserved for its weights under this tuning
  const DequantChunks c = plan_dequant_chunks(w.n, w.k_padded, g_tuning.chunk_bytes);
  for (int64_t i = 0; i < c.count; ++i) {
    const int64_t r0 = i * c.rows, rows = std::min(c.rows, w.n - r0);
    dequantize_weight_rows(w, r0, rows, scratch_, s);
    gemm(scratch_, r0, rows);
  }
}

}  // namespace ao::cuda

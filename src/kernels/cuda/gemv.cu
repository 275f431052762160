// GEMV front: dispatch by weight format (kernels in gemv_impl.cuh, one .cu per format).
#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda {

template <WeightFormat F>
void gemv_format(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s);

int gemv_k_align(WeightFormat f) {
  switch (f) {
    case WeightFormat::bf16:
      return 32 * 8;
    case WeightFormat::int8:
      return 32 * 16;
    case WeightFormat::fp8:
      return 32 * 16;
    case WeightFormat::int4:
      return 32 * 32;
  }
  return 1024;
}

size_t DeviceWeight::scale_bytes() const {
  switch (format) {
    case WeightFormat::bf16:
      return 0;
    case WeightFormat::int8:
    case WeightFormat::fp8:
      return static_cast<size_t>(n * 4);
    case WeightFormat::int4:
      return static_cast<size_t>(int4_scale_rows(n) * (k_padded / group_size) * kInt4ScaleBytes);
  }
  return 0;
}

size_t DeviceWeight::bytes() const {
  switch (format) {
    case WeightFormat::bf16:
      return static_cast<size_t>(n * k_padded * 2);
    case WeightFormat::int8:
    case WeightFormat::fp8:
      return static_cast<size_t>(n * k_padded) + scale_bytes();
    case WeightFormat::int4:
      return static_cast<size_t>(n * k_padded / 2) + scale_bytes();
  }
  return 0;
}

namespace {
GemvTuning g_tuning;
GemvLaunch g_last_launch;
}  // namespace
void record_gemv_launch(const GemvLaunch& l) { g_last_launch = l; }
GemvLaunch last_gemv_launch() { return g_last_launch; }
void set_gemv_tuning(const GemvTuning& t) {
  if (t.k_split != 0 && t.k_split != 1 && t.k_split != 2 && t.k_split != 4)
    fail("set_gemv_tuning: k_split must be 0 (automatic), 1, 2 or 4");
  for (const int g : {t.tma_tile_group, t.tma_tile_group_int4})
    if (g != 1 && g != 2 && g != 4 && g != 8)
      fail("set_gemv_tuning: tma_tile_group and tma_tile_group_int4 must be 1, 2, 4 or 8");
  if (t.tma_pad_rows < 0 || t.tma_pad_rows > 15)
    fail("set_gemv_tuning: tma_pad_rows is a mask of the 4 weight formats (0..15)");
  if (t.tma_prefetch_next_bytes < 0)
    fail("set_gemv_tuning: tma_prefetch_next_bytes must be >= 0");
  if (t.tma_pad_rows_byte_max_k < 0)
    fail("set_gemv_tuning: tma_pad_rows_byte_max_k must be >= 0");
  if (t.decode_o_blocks < 0 || t.decode_o_spare_sms_int4 < 0)
    fail("set_gemv_tuning: decode_o_blocks and decode_o_spare_sms_int4 must be >= 0");
  if (t.tma_pad_rows_int4_min_k < 0)
    fail("set_gemv_tuning: tma_pad_rows_int4_min_k must be >= 0");
  if (t.tma_ring_bytes < 0 || t.tma_ring_bytes_decode < 0 || t.tma_ring_bytes_int4 < 0)
    fail("set_gemv_tuning: tma_ring_bytes, tma_ring_bytes_decode and tma_ring_bytes_int4 must be "
         ">= 0");
  if (t.tma_split_batch8 < 0 || t.tma_split_batch8 > 15)
    fail("set_gemv_tuning: tma_split_batch8 is a mask of the 4 weight formats (0..15)");
  if (t.tma_split_batch4 < 0 || t.tma_split_batch4 > 15)
    fail("set_gemv_tuning: tma_split_batch4 is a mask of the 4 weight formats (0..15)");
  if (t.tma_batch_max_x < 0) fail("set_gemv_tuning: tma_batch_max_x must be >= 0");
  if (t.tma_batch4_max_x < 0) fail("set_gemv_tuning: tma_batch4_max_x must be >= 0");
  if (t.tma_int4_batch8_max_x < 0) fail("set_gemv_tuning: tma_int4_batch8_max_x must be >= 0");
  if (t.tma_batch_fewer_tiles_x < 0)
    fail("set_gemv_tuning: tma_batch_fewer_tiles_x must be >= 0");
  if (t.tma_batch_fewer_tiles_x_byte < 0)
    fail("set_gemv_tuning: tma_batch_fewer_tiles_x_byte must be >= 0");
  g_tuning = t;
}
GemvTuning gemv_tuning() { return g_tuning; }

#ifdef AO_KERNEL_TRACE
namespace detail {
// One per translation unit that traces (AO_KERNEL_TRACE_TU in trace.cuh).
void kernel_trace_set_gemv_bf16(KernelTraceBuffer*);
void kernel_trace_set_gemv_int8(KernelTraceBuffer*);
void kernel_trace_set_gemv_int4(KernelTraceBuffer*);
void kernel_trace_set_gemv_fp8(KernelTraceBuffer*);
void kernel_trace_set_attention(KernelTraceBuffer*);
void kernel_trace_set_elementwise(KernelTraceBuffer*);
void kernel_trace_set_sampling(KernelTraceBuffer*);
}  // namespace detail
bool kernel_trace_available() { return true; }
void set_kernel_trace(KernelTraceBuffer* buf) {
  for (auto set : {detail::kernel_trace_set_gemv_bf16, detail::kernel_trace_set_gemv_int8,
                   detail::kernel_trace_set_gemv_int4, detail::kernel_trace_set_gemv_fp8,
                   detail::kernel_trace_set_attention, detail::kernel_trace_set_elementwise,
                   detail::kernel_trace_set_sampling})
    set(buf);
}
#else
bool kernel_trace_available() { return false; }
void set_kernel_trace(KernelTraceBuffer*) {
  fail("set_kernel_trace: this build has no kernel tracing (the kernel lab's, bench/kernels, has)");
}
#endif

void gemv(const DeviceWeight& w, const GemvArgs& a, cudaStream_t s) {
  if (a.m < 1 || a.m > 8) fail("gemv: batch must be 1..8");
  if (a.input == GemvInput::int4_digits && a.m != 1) fail("gemv: int4_digits input needs batch 1");
  if (a.max_blocks < 0) fail("gemv: max_blocks must be >= 0 (0: one block per SM)");
  if (w.act_quant != ActQuant::none && w.format != WeightFormat::fp8)
    fail("gemv: activation quantization needs fp8 weights");
  switch (w.format) {
    case WeightFormat::bf16:
      return gemv_format<WeightFormat::bf16>(w, a, s);
    case WeightFormat::int8:
      return gemv_format<WeightFormat::int8>(w, a, s);
    case WeightFormat::int4:
      return gemv_format<WeightFormat::int4>(w, a, s);
    case WeightFormat::fp8:
      return gemv_format<WeightFormat::fp8>(w, a, s);
  }
}

}  // namespace ao::cuda

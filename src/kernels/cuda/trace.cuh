// Kernel timeline tracing for the kernel lab (compiled in only with -DAO_KERNEL_TRACE, which
// bench/kernels/CMakeLists.txt sets): thread 0 of every block of the decode-step kernels records
// %globaltimer at a few points of its life (start, grid-dependency wait released, prologue done,
// end; trace_point_at records a stamp another warp took) into a device buffer, so one decode step
// replayed from its CUDA graph can be laid out as a timeline (bench_cuda_decode --trace). With
// tracing off (no buffer set) each point costs a test of threadIdx.x and, in thread 0, a load
// from the constant cache (the pointer lives in constant memory: as a global it was an L2 load in
// every thread at every point, which under the weight stream slowed the lab's binary against the
// main build's, lab note 58); without the define it compiles to nothing.
//
// Slots: a block reserves kTraceSlots events with one atomic at its `start` stamp (every traced
// kernel stamps it first, before its grid-dependency wait, so that round trip overlaps the
// wait), and each later point writes its own slot (start + point) with a plain store. Until
// session 8 every point took an atomic: under the weight stream its round trip stalled warp 0
// for ~1 us per point and inflated the GEMV prologues it was measuring (lab note 31). The host
// zeroes the buffer first and skips unwritten slots (time 0).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda::detail {

#ifdef AO_KERNEL_TRACE
namespace {
// One per translation unit (no relocatable device code): set_kernel_trace() sets them all.
__constant__ KernelTraceBuffer* g_trace = nullptr;
__shared__ unsigned g_trace_slot;  // the block's first reserved event (set at its start stamp)
}  // namespace

__device__ __forceinline__ bool tracing() { return g_trace != nullptr; }

__device__ __forceinline__ uint64_t trace_now() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Thread 0 records `point` at time t (a stamp taken earlier, e.g. by another warp).
__device__ __forceinline__ void trace_point_at(TraceKind kind, const void* tag, uint32_t n,
                                               uint32_t k, TracePoint point, uint64_t t) {
  if (threadIdx.x != 0) return;
  KernelTraceBuffer* b = g_trace;
  if (b == nullptr) return;
  uint32_t sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  unsigned i;
  if (point == TracePoint::start) {
    i = atomicAdd(&b->count, kTraceSlots);
    g_trace_slot = i;
  } else {
    i = g_trace_slot + static_cast<unsigned>(point);
  }
  if (i >= b->capacity) return;
  KernelTraceEvent& e = b->events[i];
  e.time_ns = t;
  e.tag = reinterpret_cast<uint64_t>(tag);
  e.block = blockIdx.x + blockIdx.y * gridDim.x;
  e.n = n;
  e.k = k;
  e.kind = static_cast<uint16_t>(kind);
  e.point = static_cast<uint8_t>(point);
  e.sm = static_cast<uint8_t>(sm);
}

__device__ __forceinline__ void trace_point(TraceKind kind, const void* tag, uint32_t n, uint32_t k,
                                            TracePoint point) {
  if (threadIdx.x != 0 || g_trace == nullptr) return;
  trace_point_at(kind, tag, n, k, point, trace_now());
}

// Defines this translation unit's setter (called by set_kernel_trace in gemv.cu).
#define AO_KERNEL_TRACE_TU(name)                               \
  namespace ao::cuda::detail {                                 \
  void kernel_trace_set_##name(KernelTraceBuffer* p) {         \
    AO_CUDA_CHECK(cudaMemcpyToSymbol(g_trace, &p, sizeof(p))); \
  }                                                            \
  }
#else
__device__ __forceinline__ bool tracing() { return false; }
__device__ __forceinline__ uint64_t trace_now() { return 0; }
__device__ __forceinline__ void trace_point_at(TraceKind, const void*, uint32_t, uint32_t,
                                               TracePoint, uint64_t) {}
__device__ __forceinline__ void trace_point(TraceKind, const void*, uint32_t, uint32_t,
                                            TracePoint) {}
#define AO_KERNEL_TRACE_TU(name)
#endif

}  // namespace ao::cuda::detail

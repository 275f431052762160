// Host side of the kernel lab's timeline tracing (trace.cuh stamps the events, kernels.h holds
// their layout): the events of traced decode steps summarized per kernel class, as
// bench_cuda_decode --trace prints them. Plain C++, no CUDA calls.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ao/kernels/cuda/kernels.h"

namespace ao::cuda {

// Means per instance of one kernel class (e.g. "gemv 6144x4096 (mma)", "attention"), in µs. A
// kernel instance is all events with one (kind, tag); instances are ordered by their last block's
// end, and "adds" is that end minus the previous instance's (the time the kernel adds to the
// step). start / start_last / wait are relative to the previous instance's end; rmsnorm and
// prologue run from the first wait release to the last block's RMSNorm / prologue end;
// block_prologue is the mean over blocks of their own (prologue end - wait release), and
// block_x_landed / block_x_last / block_staged the same for the kernels that stamp those points
// (the TMA GEMV: x in thread 0's registers, in the last warp's, x staged by thread 0); stream is
// the last block's end minus the last prologue end; tail the last minus the first block's end.
struct KernelTraceRow {
  std::string name;
  double per_step = 0, adds = 0, start = 0, start_last = 0, wait = 0, rmsnorm = 0, prologue = 0,
         block_prologue = 0, block_x_landed = 0, block_x_last = 0, block_staged = 0, stream = 0,
         tail = 0, blocks = 0;
  double weight_mb = 0;  // GEMV: weight bytes (n * k * bytes_per_weight) in 1e6, else 0
};

class KernelTraceReport {
 public:
  // bytes_per_weight: of the GEMVs' weight format (for KernelTraceRow::weight_mb).
  explicit KernelTraceReport(double bytes_per_weight) : bytes_per_weight_(bytes_per_weight) {}
  // The events of one decode step (any order; events with time_ns 0 are unwritten slots and
  // skipped).
  void add_step(const std::vector<KernelTraceEvent>& events);
  int steps() const { return steps_; }
  double step_us() const { return steps_ ? step_us_ / steps_ : 0; }  // first start to last end
  double resolution_ns() const { return resolution_ns_; }  // smallest step between two stamps
  std::vector<KernelTraceRow> rows() const;                // in order of first appearance in a step

 private:
  struct Sum {
    int count = 0;
    KernelTraceRow total;
  };
  double bytes_per_weight_;
  int steps_ = 0;
  double step_us_ = 0, resolution_ns_ = 0;
  std::map<std::string, Sum> sums_;
  std::vector<std::string> order_;
};

}  // namespace ao::cuda

// KernelTraceReport: the kernel lab's decode-step timeline from trace events (kernel_trace.h).
#include <algorithm>
#include <cstdint>
#include <utility>

#include "ao/kernels/cuda/kernel_trace.h"

namespace ao::cuda {

namespace {
constexpr uint64_t kNone = ~0ull;

struct Instance {
  int kind = 0;
  uint32_t n = 0, k = 0;
  int blocks = 0;
  uint64_t start = kNone, start_last = 0, wait = kNone, rms = 0, pro = 0, end_first = kNone,
           end = 0;
  // Sums over blocks of (point - their wait release), and their counts: prologue end, x
  // landed, x staged, the last warp's x landed.
  double block_pro_sum = 0, block_x_sum = 0, block_st_sum = 0, block_xl_sum = 0;
  int block_pro_count = 0, block_x_count = 0, block_st_count = 0, block_xl_count = 0;
};

double us(uint64_t t, uint64_t t0) {
  return (static_cast<double>(t) - static_cast<double>(t0)) / 1e3;
}

std::string class_name(const Instance& in) {
  switch (static_cast<TraceKind>(in.kind)) {
    case TraceKind::gemv:
      return "gemv " + std::to_string(in.n) + "x" + std::to_string(in.k);
    case TraceKind::gemv_int4_mma:
      return "gemv " + std::to_string(in.n) + "x" + std::to_string(in.k) + " (mma)";
    case TraceKind::gemv_tma:
      return "gemv " + std::to_string(in.n) + "x" + std::to_string(in.k) + " (tma)";
    case TraceKind::attention:
      return "attention";
    case TraceKind::embedding:
      return "embedding";
    case TraceKind::sample:
      return "sample";
  }
  return "kind " + std::to_string(in.kind);
}
}  // namespace

void KernelTraceReport::add_step(const std::vector<KernelTraceEvent>& events) {
  std::map<std::pair<int, uint64_t>, Instance> inst;
  struct BlockTimes {
    uint64_t wait = 0, pro = 0, x = 0, st = 0, xl = 0;
  };
  std::map<std::pair<std::pair<int, uint64_t>, uint32_t>, BlockTimes> block;
  std::vector<uint64_t> times;
  for (const auto& e : events) {
    if (e.time_ns == 0) continue;  // a reserved slot its block never stamped
    const std::pair<int, uint64_t> key{e.kind, e.tag};
    Instance& in = inst[key];
    in.kind = e.kind, in.n = e.n, in.k = e.k;
    times.push_back(e.time_ns);
    switch (static_cast<TracePoint>(e.point)) {
      case TracePoint::start:
        in.start = std::min(in.start, e.time_ns);
        in.start_last = std::max(in.start_last, e.time_ns);
        break;
      case TracePoint::wait_done:
        in.wait = std::min(in.wait, e.time_ns);
        in.start = std::min(in.start, e.time_ns);  // kernels that stamp no start
        block[{key, e.block}].wait = e.time_ns;
        break;
      case TracePoint::rms_done:
        in.rms = std::max(in.rms, e.time_ns);
        break;
      case TracePoint::prologue_done:
        in.pro = std::max(in.pro, e.time_ns);
        block[{key, e.block}].pro = e.time_ns;
        break;
      case TracePoint::x_landed:
        block[{key, e.block}].x = e.time_ns;
        break;
      case TracePoint::staged:
        block[{key, e.block}].st = e.time_ns;
        break;
      case TracePoint::x_last:
        block[{key, e.block}].xl = e.time_ns;
        break;
      case TracePoint::end:
        in.end = std::max(in.end, e.time_ns);
        in.end_first = std::min(in.end_first, e.time_ns);
        ++in.blocks;
        break;
    }
  }
  for (const auto& [kb, b] : block) {
    if (!b.wait) continue;
    Instance& in = inst[kb.first];
    auto add = [&](uint64_t t, double& sum, int& count) {
      if (t) sum += us(t, b.wait), ++count;
    };
    add(b.pro, in.block_pro_sum, in.block_pro_count);
    add(b.x, in.block_x_sum, in.block_x_count);
    add(b.st, in.block_st_sum, in.block_st_count);
    add(b.xl, in.block_xl_sum, in.block_xl_count);
  }
  std::sort(times.begin(), times.end());
  for (size_t i = 1; i < times.size(); ++i)
    if (times[i] > times[i - 1]) {
      const double d = static_cast<double>(times[i] - times[i - 1]);
      resolution_ns_ = resolution_ns_ == 0 ? d : std::min(resolution_ns_, d);
    }

  std::vector<Instance> seq;
  for (const auto& [key, in] : inst)
    if (in.end > 0) seq.push_back(in);
  if (seq.empty()) return;
  std::sort(seq.begin(), seq.end(),
            [](const Instance& a, const Instance& b) { return a.end < b.end; });
  uint64_t first = kNone;
  for (const auto& in : seq) first = std::min(first, in.start);
  ++steps_;
  step_us_ += us(seq.back().end, first);
  uint64_t prev_end = first;
  for (const auto& in : seq) {
    const std::string name = class_name(in);
    if (!sums_.count(name)) order_.push_back(name);
    Sum& s = sums_[name];
    KernelTraceRow& r = s.total;
    ++s.count;
    r.adds += us(in.end, prev_end);
    if (in.start_last > 0) {
      r.start += us(in.start, prev_end);
      r.start_last += us(in.start_last, prev_end);
    }
    if (in.wait != kNone) {
      r.wait += us(in.wait, prev_end);
      if (in.rms > 0) r.rmsnorm += us(in.rms, in.wait);
      if (in.pro > 0) {
        r.prologue += us(in.pro, in.wait);
        r.stream += us(in.end, in.pro);
      }
    }
    if (in.block_pro_count > 0) r.block_prologue += in.block_pro_sum / in.block_pro_count;
    if (in.block_x_count > 0) r.block_x_landed += in.block_x_sum / in.block_x_count;
    if (in.block_st_count > 0) r.block_staged += in.block_st_sum / in.block_st_count;
    if (in.block_xl_count > 0) r.block_x_last += in.block_xl_sum / in.block_xl_count;
    r.tail += us(in.end, in.end_first);
    r.blocks += in.blocks;
    const bool gemv = in.kind == static_cast<int>(TraceKind::gemv) ||
                      in.kind == static_cast<int>(TraceKind::gemv_int4_mma) ||
                      in.kind == static_cast<int>(TraceKind::gemv_tma);
    if (gemv) r.weight_mb += static_cast<double>(in.n) * in.k * bytes_per_weight_ / 1e6;
    prev_end = in.end;
  }
}

std::vector<KernelTraceRow> KernelTraceReport::rows() const {
  std::vector<KernelTraceRow> out;
  for (const auto& name : order_) {
    const Sum& s = sums_.at(name);
    const double c = s.count;
    KernelTraceRow r = s.total;
    r.name = name;
    r.per_step = c / std::max(steps_, 1);
    for (double* v : {&r.adds, &r.start, &r.start_last, &r.wait, &r.rmsnorm, &r.prologue,
                      &r.block_prologue, &r.block_x_landed, &r.block_x_last, &r.block_staged,
                      &r.stream, &r.tail, &r.blocks, &r.weight_mb})
      *v /= c;
    out.push_back(r);
  }
  return out;
}

}  // namespace ao::cuda

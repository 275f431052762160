// Throughput benchmark in the style of llama-bench: prompt processing (ppN: one forward of
// N tokens) and text generation (tgN: N single-token forwards from an empty cache), each
// repeated and reported as tokens/s mean +/- stddev. Rows are backend-neutral so other
// engines (CUDA) can add their own and share the markdown/JSON printers.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ao/models/causal_lm.h"

namespace ao::runtime {

struct BenchOptions {
  std::vector<int64_t> n_prompt = {512};  // one pp test per entry (0: none)
  std::vector<int64_t> n_gen = {128};     // one tg test per entry (0: none)
  int repetitions = 3;
  bool warmup = true;  // one untimed run of each test first
  uint64_t seed = 1;   // random token ids
};

struct BenchRow {
  std::string model;  // name shown in the table
  uint64_t size_bytes = 0;
  int64_t params = 0;
  std::string backend;  // "CPU", "CUDA"
  int threads = 0;
  std::string test;  // "pp512", "tg128"
  int64_t n_prompt = 0, n_gen = 0;
  std::vector<double> samples_tps;
  double tps_mean = 0, tps_stddev = 0;
};

// Context the model needs for these tests.
int64_t bench_context(const BenchOptions& opts);
std::vector<BenchRow> bench_cpu(models::CausalLM& model, const std::string& model_name,
                                const BenchOptions& opts);

// | model | size | params | backend | threads | test | t/s |
std::string bench_markdown(const std::vector<BenchRow>& rows);
nlohmann::ordered_json bench_json(const std::vector<BenchRow>& rows);

}  // namespace ao::runtime

#include "ao/runtime/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/core/parallel.h"

namespace ao::runtime {
namespace {

std::string human_size(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.2f} {}", b, units[u]);
}

std::string human_params(double p) {
  if (p >= 1e9) return fmt::format("{:.2f} B", p / 1e9);
  if (p >= 1e6) return fmt::format("{:.2f} M", p / 1e6);
  if (p >= 1e3) return fmt::format("{:.2f} K", p / 1e3);
  return fmt::format("{:.0f}", p);
}

void finish(BenchRow& r) {
  const double n = static_cast<double>(r.samples_tps.size());
  double s = 0, s2 = 0;
  for (double v : r.samples_tps) s += v, s2 += v * v;
  r.tps_mean = s / n;
  r.tps_stddev = n > 1 ? std::sqrt(std::max(0.0, (s2 - n * r.tps_mean * r.tps_mean) / (n - 1))) : 0;
}

}  // namespace

int64_t bench_context(const BenchOptions& o) {
  int64_t c = 1;
  for (int64_t p : o.n_prompt) c = std::max(c, p);
  for (int64_t g : o.n_gen) c = std::max(c, g);
  return c;
}

std::vector<BenchRow> bench_cpu(models::CausalLM& model, const std::string& name,
                                const BenchOptions& o) {
  AO_CHECK(o.repetitions > 0, "bench: repetitions must be positive");
  AO_CHECK(bench_context(o) <= model.context_size(),
           "bench: tests need {} positions, the model's context has {}", bench_context(o),
           model.context_size());
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(model.vocab_size() - 1));
  std::vector<float> logits(static_cast<size_t>(model.vocab_size()));
  std::vector<BenchRow> rows;
  auto base_row = [&](const std::string& test) {
    BenchRow r;
    r.model = name;
    r.size_bytes = model.weight_bytes();
    r.params = model.parameter_count();
    r.backend = "CPU";
    r.threads = num_threads();
    r.test = test;
    return r;
  };
  for (int64_t np : o.n_prompt) {
    if (np <= 0) continue;
    BenchRow r = base_row("pp" + std::to_string(np));
    r.n_prompt = np;
    std::vector<int32_t> toks(static_cast<size_t>(np));
    for (int rep = -(o.warmup ? 1 : 0); rep < o.repetitions; ++rep) {
      for (auto& t : toks) t = pick(rng);
      model.reset();
      Timer t;
      model.forward(toks.data(), np, logits.data(), false);
      if (rep >= 0) r.samples_tps.push_back(np / t.seconds());
    }
    finish(r);
    rows.push_back(std::move(r));
  }
  for (int64_t ng : o.n_gen) {
    if (ng <= 0) continue;
    BenchRow r = base_row("tg" + std::to_string(ng));
    r.n_gen = ng;
    for (int rep = -(o.warmup ? 1 : 0); rep < o.repetitions; ++rep) {
      model.reset();
      int32_t tok = pick(rng);
      Timer t;
      for (int64_t i = 0; i < ng; ++i) {
        model.forward(&tok, 1, logits.data(), false);
        tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      if (rep >= 0) r.samples_tps.push_back(ng / t.seconds());
    }
    finish(r);
    rows.push_back(std::move(r));
  }
  model.reset();
  return rows;
}

std::string bench_markdown(const std::vector<BenchRow>& rows) {
  std::string s = "| model | size | params | backend | threads | test | t/s |\n";
  s += "| ----- | ---: | -----: | ------- | ------: | ---: | --: |\n";
  for (const auto& r : rows)
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} |\n", r.model,
                     human_size(double(r.size_bytes)), human_params(double(r.params)), r.backend,
                     r.threads, r.test, r.tps_mean, r.tps_stddev);
  return s;
}

nlohmann::ordered_json bench_json(const std::vector<BenchRow>& rows) {
  auto a = nlohmann::ordered_json::array();
  for (const auto& r : rows)
    a.push_back({{"model", r.model},
                 {"size_bytes", r.size_bytes},
                 {"params", r.params},
                 {"backend", r.backend},
                 {"threads", r.threads},
                 {"test", r.test},
                 {"n_prompt", r.n_prompt},
                 {"n_gen", r.n_gen},
                 {"avg_ts", r.tps_mean},
                 {"stddev_ts", r.tps_stddev},
                 {"samples_ts", r.samples_tps}});
  return a;
}

}  // namespace ao::runtime

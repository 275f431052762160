// llama-bench-style CUDA benchmark over synthetic model shapes (random weights made on the
// device): prints the card's measured ceilings, then a markdown table and JSON lines.
//   bench_cuda_decode [--models llama3-8b,llama3-1b] [--formats bf16,int8wo,int4wo-g128]
//                     [--pp 512] [--tg 128] [--reps 3] [--json FILE]
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "ao/runtime/cuda_engine.h"

namespace {
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  std::string models = "llama3-8b,llama3-1b", formats = "bf16,int8wo,int4wo-g128", json;
  int pp = 512, tg = 128, reps = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--models") models = next();
    else if (a == "--formats") formats = next();
    else if (a == "--pp") pp = std::stoi(next());
    else if (a == "--tg") tg = std::stoi(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--json") json = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    using namespace ao::runtime;
    const double bw = cuda_copy_bandwidth_gb_s();
    const double gemm_big = cuda_gemm_tflops(8192, 8192, 8192);
    const double gemm_pp = cuda_gemm_tflops(pp > 0 ? pp : 512, 14336, 4096);
    std::printf("device: %s\n", cuda_device_name().c_str());
    std::printf("d2d copy bandwidth (read+write, 1 GiB): %.0f GB/s\n", bw);
    std::printf("cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s; %dx14336x4096: %.0f TFLOP/s\n\n", gemm_big,
                pp, gemm_pp);
    std::FILE* jf = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
    if (jf)
      std::fprintf(jf, "{\"device\":\"%s\",\"copy_gb_s\":%.1f,\"gemm_tflops\":%.1f,\"gemm_pp_tflops\":%.1f}\n",
                   cuda_device_name().c_str(), bw, gemm_big, gemm_pp);
    std::printf("| model | format | weights GB | test | t/s | GB/s | of copy BW | TFLOP/s | of GEMM |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& m : split(models)) {
      for (const auto& f : split(formats)) {
        CudaBenchResult r = cuda_bench(m, f, pp, tg, reps);
        if (pp > 0)
          std::printf("| %s | %s | %.2f | pp%d | %.1f | | | %.0f | %.0f%% |\n", m.c_str(), f.c_str(),
                      r.weight_gb, pp, r.pp_tok_s, r.pp_tflops, 100.0 * r.pp_tflops / gemm_big);
        if (tg > 0)
          std::printf("| %s | %s | %.2f | tg%d | %.1f | %.0f | %.0f%% | | |\n", m.c_str(), f.c_str(),
                      r.weight_gb, tg, r.tg_tok_s, r.tg_gb_s, 100.0 * r.tg_gb_s / bw);
        std::fflush(stdout);
        if (jf)
          std::fprintf(jf,
                       "{\"model\":\"%s\",\"format\":\"%s\",\"weight_gb\":%.4f,\"pp\":%d,\"pp_tok_s\":%.2f,"
                       "\"pp_tflops\":%.2f,\"tg\":%d,\"tg_tok_s\":%.2f,\"tg_gb_s\":%.1f}\n",
                       m.c_str(), f.c_str(), r.weight_gb, pp, r.pp_tok_s, r.pp_tflops, tg,
                       r.tg_tok_s, r.tg_gb_s);
      }
    }
    if (jf) std::fclose(jf);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// `ao generate --device cuda` and TorchAO checkpoints on the CudaEngine, end to end: greedy text
// of stories260K against the golden file, and quantized checkpoints (as `ao quantize` writes
// them) against the CPU model on the same quantized weights. Skipped without a GPU. Only in the
// main build (it needs the core library and the ao binary): the stand-alone CUDA lab build,
// which globs tests/kernels/test_cuda_*.cpp too, defines no AO_BINARY_DIR and compiles nothing.
#ifdef AO_BINARY_DIR

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "ao/core/mmap.h"
#include "ao/io/model_files.h"
#include "ao/models/registry.h"
#include "ao/quant/checkpoint.h"
#include "ao/quant/config.h"
#include "ao/runtime/cuda_engine.h"
#include "ao/runtime/cuda_weights.h"
#include "ao/text/tokenizer.h"
#include "test_util.h"

bool ao_cuda_available();  // src/core/device_cuda.cu

namespace ao {
namespace {

#define AO_SKIP_WITHOUT_GPU_OR_DATA()                               \
  do {                                                              \
    if (!ao_cuda_available()) GTEST_SKIP() << "no CUDA device";     \
    AO_REQUIRE_SHARED_DATA();                                       \
  } while (0)

// The first ids of stories260K's fp32 greedy continuation from BOS (stories260K.greedy.txt).
std::vector<int32_t> golden_ids(size_t n) {
  const std::string g = read_text_file(test::stories260k_dir() + "/stories260K.greedy.txt");
  std::string line = g.substr(g.rfind("\n[") + 2);
  std::vector<int32_t> ids;
  for (size_t p = 0; p < line.size() && ids.size() < n + 1;) {
    size_t q = line.find_first_of(",]", p);
    ids.push_back(std::stoi(line.substr(p, q - p)));
    p = q + 1;
  }
  return std::vector<int32_t>(ids.begin() + 1, ids.end());  // without BOS
}

double nmse(const std::vector<float>& a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (a[i] - ref[i]) * double(a[i] - ref[i]);
    den += ref[i] * double(ref[i]);
  }
  return num / std::max(den, 1e-30);
}

TEST(CudaCli, GenerateGreedyStories260KMatchesGoldenPrefix) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  const std::string dir = test::stories260k_dir();
  // bf16 weights and activations follow the fp32 greedy path for its first 15 tokens (the
  // engine test checks the same ids); the text of those must come out of the CLI verbatim.
  auto tok = text::load_tokenizer(dir + "/tok512.bin");
  const std::string want = tok->decode(golden_ids(15));
  ASSERT_GT(want.size(), 20u);
  for (const char* fmt : {"bf16", "int8wo"}) {
    const auto r = test::run_ao("generate --device cuda --cuda-format " + std::string(fmt) + " -m " +
                                dir + "/stories260K.bin --temp 0 -n 40 --no-echo");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    if (std::string(fmt) == "bf16")
      EXPECT_NE(r.out.find(want), std::string::npos) << "want prefix: " << want << "\ngot:\n" << r.out;
    EXPECT_NE(r.out.find("decode: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
  }
  // Stops at EOS like the CPU path: a long run ends with stop_token or length, never crashes.
  const auto r2 = test::run_ao("generate --device cuda -m " + dir +
                               "/stories260K.bin -p \"Once upon a time\" --temp 0.8 --top-k 40 "
                               "--top-p 0.9 -s 3 -n 300");
  ASSERT_EQ(r2.exit_code, 0) << r2.out;
  EXPECT_NE(r2.out.find("stop:"), std::string::npos);
  // Sampling flags the CUDA sampler lacks are errors, not silently ignored.
  const auto r3 =
      test::run_ao("generate --device cuda -m " + dir + "/stories260K.bin --repeat-penalty 1.3");
  EXPECT_NE(r3.exit_code, 0);
  EXPECT_NE(r3.out.find("not supported"), std::string::npos) << r3.out;
}

// A TorchAO checkpoint on the engine (its quantized weights uploaded as they are) against the
// CPU model loaded from the same checkpoint: teacher-forced logits over 40 positions; the argmax
// may differ at `argmax_slack` of them (near-ties).
void check_checkpoint_on_cuda(const std::string& config, double bound, int min_mapped,
                              int argmax_slack = 2) {
  test::TempDir tmp;
  const std::string src = test::stories260k_dir() + "/stories260K.bin", out = tmp.file("q");
  quant::quantize_model(io::open_model_files(src),
                        quant::QuantPlan::single(quant::parse_quant_config(config)), out);
  const auto w = runtime::cuda_model_weights(io::open_model_files(out));
  int mapped = 0;
  for (const auto& h : w.weights) mapped += h.quantized != nullptr;
  EXPECT_GE(mapped, min_mapped) << config;
  runtime::CudaEngineOptions opt;
  opt.max_seq_len = 128;
  opt.max_prefill = 16;  // 34 prompt tokens in three chunks (quantized weights through cuBLAS)
  auto eng = runtime::CudaEngine::create_from_host(w.config, w.weights, opt);

  auto cpu = models::load_model(out);
  std::vector<int32_t> toks = {1};
  for (int32_t t : golden_ids(39)) toks.push_back(t);
  const size_t V = static_cast<size_t>(w.config.vocab_size);
  std::vector<float> ref(toks.size() * V);
  cpu.model->reset();
  cpu.model->forward(toks.data(), static_cast<int64_t>(toks.size()), ref.data(), true);

  const size_t np = 34;
  int argmax_same = 0, positions = 0;
  double worst = 0;
  auto check = [&](const std::vector<float>& lg, size_t pos) {
    const float* r = ref.data() + pos * V;
    worst = std::max(worst, nmse(lg, r, V));
    argmax_same += std::max_element(lg.begin(), lg.end()) - lg.begin() ==
                   std::max_element(r, r + V) - r;
    ++positions;
  };
  // Chunked prefill (GEMMs on dequantized weights; fp8dq: the FP8 GEMM), then decode steps
  // (GEMV, CUDA graph) ...
  check(eng->prefill(std::vector<int32_t>(toks.begin(), toks.begin() + np)), np - 1);
  for (size_t t = np; t < toks.size(); ++t) check(eng->decode(toks[t]), t);
  // ... and every position through the decode GEMVs.
  eng->reset();
  check(eng->prefill({toks[0]}), 0);
  for (size_t t = 1; t < toks.size(); ++t) check(eng->decode(toks[t]), t);
  std::printf("%s checkpoint on cuda vs cpu: worst logits NMSE %.3g, argmax %d/%d\n",
              config.c_str(), worst, argmax_same, positions);
  EXPECT_LT(worst, bound) << config;
  EXPECT_GE(argmax_same, positions - argmax_slack) << config;

  // And through the CLI: loads, reports the mapping, generates.
  const auto r = test::run_ao("generate --device cuda -m " + out + " --temp 0 -n 24");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("weights: "), std::string::npos) << r.out;
}

TEST(CudaCli, TorchAOInt8CheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("int8wo", 1e-2, 35);
}

TEST(CudaCli, TorchAOInt4CheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("int4wo-g32", 2e-2, 30);  // down_proj (K = 172) is dequantized
}

TEST(CudaCli, TorchAOInt4TilePackedCheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("int4wo-g32-tp", 2e-2, 35);  // partial last group of down_proj
}

TEST(CudaCli, TorchAOInt4HqqCheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("int4wo-g32-hqq", 2e-2, 35);
}

TEST(CudaCli, TorchAOFloat8CheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("fp8wo", 1e-2, 35);
}

// fp8 weights and dynamically quantized fp8 activations (prefill through cuBLASLt FP8). The
// CPU model quantizes f32 activations, the engine bf16 ones (TorchAO's bf16 model does the
// same), so an fp8 rounding differs now and then.
TEST(CudaCli, TorchAOFloat8DynamicRowCheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("fp8dq-row", 2e-2, 35);
}

// Per-tensor activation scales depend on which tokens share a call: the CPU model sees all 40
// at once, the engine chunks of 16 (prefill) or one token (decode). The same quantization
// recipe on different token sets: a looser bound.
TEST(CudaCli, TorchAOFloat8DynamicTensorCheckpointMatchesCpu) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  check_checkpoint_on_cuda("fp8dq-tensor", 1e-1, 35, 8);
}

TEST(CudaCli, BenchRealModel) {
  AO_SKIP_WITHOUT_GPU_OR_DATA();
  const auto r = test::run_ao("bench --device cuda -m " + test::stories260k_dir() +
                              "/stories260K.bin -p 64 -n 32 -r 1 --format int8wo");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("tg32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pp64"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ao

#endif  // AO_BINARY_DIR

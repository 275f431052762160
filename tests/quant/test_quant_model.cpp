// Quantized checkpoints drive the real model: stories260K quantized by ao, loaded back the
// way the model loader does it, must greedy-decode the golden text's first tokens (int8)
// and stay close to the fp32 logits (KL) for every format.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "ao/core/mmap.h"
#include "ao/models/registry.h"
#include "ao/quant/checkpoint.h"
#include "ao/runtime/perplexity.h"

using namespace ao;
namespace fs = std::filesystem;

namespace {

const std::string kStories =
    std::string(AO_SOURCE_DIR) + "/../shared/data/models/stories260K/stories260K.bin";
const std::vector<int32_t> kGolden = {1,   403, 407, 261, 378, 432, 383, 286,
                                      261, 376, 298, 315, 421, 395, 317, 426};

std::unique_ptr<models::CausalLM> load_quantized(const std::string& path) {
  io::ModelFiles files = io::open_model_files(path);
  EXPECT_TRUE(quant::is_torchao_checkpoint(files));
  quant::QuantizedWeights q = quant::load_quantized_weights(files);
  auto model = models::build_model(*files.config, q.builder_tensors(), {}, path);
  for (const auto& [fqn, w] : q.linears) model->set_weight(fqn, w);
  return model;
}

std::vector<int32_t> greedy(models::CausalLM& m, size_t n) {
  std::vector<int32_t> ids = {1};
  std::vector<float> logits(static_cast<size_t>(m.vocab_size()));
  m.reset();
  m.forward(ids.data(), 1, logits.data(), false);
  while (ids.size() < n) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    ids.push_back(next);
    m.forward(&ids.back(), 1, logits.data(), false);
  }
  return ids;
}

// Mean KL(p_fp32 || p_quant) over the positions of `tokens`.
double mean_kl(models::CausalLM& a, models::CausalLM& b, const std::vector<int32_t>& tokens) {
  const int64_t V = a.vocab_size(), n = static_cast<int64_t>(tokens.size());
  std::vector<float> la(static_cast<size_t>(n * V)), lb(la.size());
  a.reset();
  b.reset();
  a.forward(tokens.data(), n, la.data(), true);
  b.forward(tokens.data(), n, lb.data(), true);
  double kl = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = la.data() + t * V;
    const float* y = lb.data() + t * V;
    const double mx = *std::max_element(x, x + V), my = *std::max_element(y, y + V);
    double zx = 0, zy = 0;
    for (int64_t v = 0; v < V; ++v) zx += std::exp(x[v] - mx), zy += std::exp(y[v] - my);
    for (int64_t v = 0; v < V; ++v) {
      const double lpx = x[v] - mx - std::log(zx), lpy = y[v] - my - std::log(zy);
      kl += std::exp(lpx) * (lpx - lpy);
    }
  }
  return kl / static_cast<double>(n);
}

TEST(QuantModel, QuantizedStories260KRunsThroughTheModel) {
  if (!fs::exists(kStories)) GTEST_SKIP() << "stories260K not found at " << kStories;
  const fs::path dir = fs::temp_directory_path() / ("ao_quant_model_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto fp32 = models::load_model(kStories).model;
  ASSERT_EQ(greedy(*fp32, kGolden.size()), kGolden);
  const io::ModelFiles in = io::open_model_files(kStories);
  struct Case {
    const char* config;
    double max_kl;
    bool golden;
  };
  for (const Case& c :
       {Case{"int8wo", 2e-3, true}, Case{"int8dq", 5e-3, true}, Case{"fp8dq-row", 2e-2, false},
        Case{"int4wo-g32", 0.1, false}, Case{"8da4w", 0.15, false}, Case{"mxfp4", 0.3, false},
        Case{"nvfp4", 0.3, false}}) {
    const fs::path out = dir / c.config;
    quant::quantize_model(in, quant::QuantPlan::single(quant::parse_quant_config(c.config)),
                          out.string());
    auto q = load_quantized(out.string());
    if (c.golden) EXPECT_EQ(greedy(*q, kGolden.size()), kGolden) << c.config;
    const double kl = mean_kl(*fp32, *q, kGolden);
    EXPECT_LT(kl, c.max_kl) << c.config;
    EXPECT_LT(q->weight_bytes(), fp32->weight_bytes()) << c.config;
    std::printf("[ quant    ] %-12s KL vs fp32 over the golden prefix: %.5f\n", c.config, kl);
  }
  fs::remove_all(dir);
}

// HQQ qparams (int4wo-g128-hqq: tile-packed layout, TorchAO's only HQQ layout) must not be
// worse than the plain and tile-packed min/max int4 of the same group size, beyond noise:
// paragraphs protocol on the first 30 windows of TinyStories valid_a (7650 tokens).
TEST(QuantModel, HqqInt4IsNotWorseThanPlainInt4OnStories260K) {
  const std::string text_path =
      std::string(AO_SOURCE_DIR) + "/../shared/data/text/tinystories_valid_a.txt";
  if (!fs::exists(kStories) || !fs::exists(text_path))
    GTEST_SKIP() << "stories260K or tinystories_valid_a.txt not found";
  const fs::path dir = fs::temp_directory_path() / ("ao_quant_hqq_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const io::ModelFiles in = io::open_model_files(kStories);
  auto tok = text::load_tokenizer(in.tokenizer_path);
  const std::vector<int32_t> tokens =
      runtime::tokenize_paragraphs(*tok, read_text_file(text_path), 100000);
  runtime::PerplexityOptions o;
  o.mode = runtime::PerplexityMode::bos_windows;
  o.ctx = 256;
  o.max_chunks = 30;
  std::map<std::string, double> ppl;
  for (const char* c : {"int4wo-g128", "int4wo-g128-tp", "int4wo-g128-hqq"}) {
    const fs::path out = dir / c;
    quant::quantize_model(in, quant::QuantPlan::single(quant::parse_quant_config(c)), out.string());
    auto m = models::load_model(out.string(), {.context = o.ctx});
    ppl[c] = runtime::evaluate_perplexity(*m.model, tokens, o).ppl;
    std::printf("[ quant    ] %-16s PPL over 30 windows: %.4f\n", c, ppl[c]);
  }
  EXPECT_LT(ppl["int4wo-g128-hqq"], ppl["int4wo-g128"] + 0.02);
  EXPECT_LT(ppl["int4wo-g128-hqq"], ppl["int4wo-g128-tp"] + 0.02);
  fs::remove_all(dir);
}

}  // namespace

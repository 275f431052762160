// Parity with transformers on the tiny random models of tests/fixtures/hf (built by
// scripts/fixtures/make_hf_fixtures.py): fp32 logits to 1e-4 relative error, greedy
// continuations token for token, and the tokenizer on a text prompt.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "ao/core/mmap.h"
#include "ao/io/safetensors.h"
#include "ao/models/registry.h"
#include "ao/runtime/generate.h"

namespace ao {
namespace {

const std::string kFixtures = std::string(AO_SOURCE_DIR) + "/tests/fixtures/hf/";

double max_rel_error(const float* a, const float* ref, int64_t n) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(double(a[i]) - ref[i]));
    scale = std::max(scale, std::abs(double(ref[i])));
  }
  return err / scale;
}

class ModelHfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelHfParity, LogitsAndGreedyMatchTransformers) {
  const std::string dir = kFixtures + GetParam();
  const auto ref = nlohmann::json::parse(read_text_file(dir + "/reference.json"));
  const auto logits_file = io::SafetensorsFile::open(dir + "/reference.safetensors");
  auto m = models::load_model(dir);
  EXPECT_EQ(m.model->config().architecture, ref["model"].get<std::string>());
  auto tok = models::load_model_tokenizer(m);
  const int64_t V = m.model->vocab_size();

  std::vector<std::vector<int32_t>> prompts =
      ref["prompts"].get<std::vector<std::vector<int32_t>>>();
  const auto text_ids = ref["text_prompt_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(tok->encode(ref["text_prompt"].get<std::string>(), false), text_ids)
      << "tokenizer differs from HF";
  std::vector<int32_t> text_prompt = {m.model->config().bos_token_id};
  text_prompt.insert(text_prompt.end(), text_ids.begin(), text_ids.end());
  prompts.push_back(text_prompt);

  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    const auto& p = prompts[i];
    const Tensor expect = logits_file.tensor("logits_" + std::to_string(i));
    ASSERT_EQ(expect.shape(), (Shape{int64_t(p.size()), V}));
    std::vector<float> logits(p.size() * V);
    m.model->reset();
    m.model->forward(p.data(), int64_t(p.size()), logits.data(), true);
    const double err = max_rel_error(logits.data(), expect.data<float>(), expect.numel());
    RecordProperty("max_rel_error_prompt_" + std::to_string(i), fmt::format("{:.2e}", err));
    EXPECT_LE(err, 1e-4);

    // Token by token through the KV cache gives the same last-position logits.
    std::vector<float> last(V);
    m.model->reset();
    for (size_t t = 0; t < p.size(); ++t) m.model->forward(&p[t], 1, last.data(), false);
    EXPECT_LE(max_rel_error(last.data(), expect.data<float>() + (p.size() - 1) * V, V), 1e-4);

    runtime::GenerateOptions o;
    o.max_new_tokens = ref["greedy_steps"].get<int>();
    o.sampler = runtime::SamplerParams::greedy();
    const auto r = runtime::generate(*m.model, p, o);
    EXPECT_EQ(r.tokens, ref["greedy"][i].get<std::vector<int32_t>>());
  }
}

INSTANTIATE_TEST_SUITE_P(Model, ModelHfParity, ::testing::Values("llama", "mistral", "qwen2"));

}  // namespace
}  // namespace ao

// stories260K parity with the golden values of ../shared/data/README.md.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "ao/core/mmap.h"
#include "ao/models/registry.h"
#include "ao/runtime/generate.h"
#include "ao/runtime/perplexity.h"
#include "ao/text/tokenizer.h"
#include "test_util.h"

namespace ao {
namespace {

struct Stories {
  models::LoadedModel m;
  std::unique_ptr<text::Tokenizer> tok;
};

Stories load(const std::string& dir) {
  Stories s;
  s.m = models::load_model(dir + "/stories260K.bin");
  s.tok = text::load_tokenizer(dir + "/tok512.bin");
  return s;
}

TEST(ModelStories260K, LoadsWithExpectedShape) {
  AO_REQUIRE_SHARED_DATA();
  const std::string dir = test::stories260k_dir();
  auto s = load(dir);
  const auto& c = s.m.model->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(s.m.model->context_size(), 512);
  auto lin = s.m.model->linears();
  ASSERT_EQ(lin.size(), 5u * 7 + 1);
  EXPECT_EQ(lin[6].first, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(lin.back().first, "lm_head");
  EXPECT_EQ(s.m.model->parameter_count(), c.parameter_count());
}

TEST(ModelStories260K, GreedyFromBosMatchesGolden) {
  AO_REQUIRE_SHARED_DATA();
  const std::string dir = test::stories260k_dir();
  auto s = load(dir);
  std::string golden = read_text_file(dir + "/stories260K.greedy.txt");
  // The file holds the text, then a line with the first token ids.
  const size_t ids_at = golden.rfind("\n[");
  ASSERT_NE(ids_at, std::string::npos);
  const std::string ids_line = golden.substr(ids_at + 1);
  golden = golden.substr(0, ids_at);
  runtime::GenerateOptions o;
  o.max_new_tokens = 256;
  o.sampler = runtime::SamplerParams::greedy();
  const int32_t bos = 1;
  auto r = runtime::generate(*s.m.model, std::span(&bos, 1), o);
  std::ostringstream ids;
  ids << "[1";
  std::vector<int32_t> all = {bos};
  all.insert(all.end(), r.tokens.begin(), r.tokens.end());
  for (size_t i = 1; i < all.size() && i < 40; ++i) ids << ", " << all[i];
  ids << "]";
  EXPECT_EQ(ids.str(), ids_line.substr(0, ids_line.find(']') + 1));
  EXPECT_EQ(s.tok->decode(r.tokens), golden);
}

TEST(ModelStories260K, GoldenSentenceNll) {
  AO_REQUIRE_SHARED_DATA();
  const std::string dir = test::stories260k_dir();
  auto s = load(dir);
  const auto ids =
      s.tok->encode("One day, a clever fox found a shiny key under the old oak tree.", true);
  ASSERT_EQ(ids.size(), 35u);
  std::vector<float> logits(ids.size() * 512);
  s.m.model->reset();
  s.m.model->forward(ids.data(), static_cast<int64_t>(ids.size()), logits.data(), true);
  double nll = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const float* row = logits.data() + i * 512;
    double mx = row[0], z = 0;
    for (int k = 0; k < 512; ++k) mx = std::max(mx, double(row[k]));
    for (int k = 0; k < 512; ++k) z += std::exp(row[k] - mx);
    nll -= row[ids[i + 1]] - mx - std::log(z);
  }
  EXPECT_NEAR(nll, 54.4041, 1e-3);
  EXPECT_NEAR(std::exp(nll / 34), 4.9536, 1e-3);
}

TEST(ModelStories260K, ValidAProtocolPerplexity) {
  AO_REQUIRE_SHARED_DATA();
  const std::string dir = test::stories260k_dir();
  auto s = load(dir);
  const std::string text = read_text_file(dir + "/../../text/tinystories_valid_a.txt");
  const auto tokens = runtime::tokenize_paragraphs(*s.tok, text, 100000);
  EXPECT_EQ(tokens.size(), 46731u);
  runtime::PerplexityOptions o;
  o.mode = runtime::PerplexityMode::bos_windows;
  o.ctx = 256;
  auto r = runtime::evaluate_perplexity(*s.m.model, tokens, o);
  EXPECT_EQ(r.n_tokens, 183 * 255);  // the partial last window (66 tokens) is not scored
  EXPECT_NEAR(r.mean_nll, 1.4997, 1e-3);
  EXPECT_NEAR(r.ppl, 4.480, 5e-3);
}

}  // namespace
}  // namespace ao

// Bad input to model loading and the generate/perplexity/bench commands: each a clear error
// naming what is wrong, exit status 1, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ao/core/mmap.h"
#include "ao/io/safetensors.h"
#include "ao/models/registry.h"
#include "ao/quant/dense_weight.h"
#include "test_util.h"

namespace ao {
namespace {
namespace fs = std::filesystem;

const std::string kLlama = test::fixtures_dir() + "/hf/llama";

// A copy of the llama fixture whose config.json / tensors the test may edit.
struct FixtureCopy {
  test::TempDir tmp;
  FixtureCopy() {
    for (const char* f :
         {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(kLlama + "/" + f, tmp.file(f));
  }
  std::string dir() const { return tmp.path().string(); }
  void edit_config(const std::function<void(nlohmann::json&)>& fn) {
    auto j = nlohmann::json::parse(read_text_file(tmp.file("config.json")));
    fn(j);
    std::ofstream(tmp.file("config.json")) << j.dump(1);
  }
  void edit_tensors(const std::function<void(std::vector<io::NamedTensor>&)>& fn) {
    auto f = io::SafetensorsFile::open(kLlama + "/model.safetensors");
    std::vector<io::NamedTensor> t;
    for (const auto& e : f.entries()) t.push_back({e.name, f.tensor(e.name).clone()});
    fn(t);
    io::save_safetensors(tmp.file("model.safetensors"), t);
  }
};

void expect_error(const test::RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.signal, 0) << "crashed:\n" << r.out;
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << "expected '" << needle << "' in\n" << r.out;
}

TEST(ModelErrors, UnknownArchitectureThroughCli) {
  FixtureCopy f;
  f.edit_config([](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  expect_error(test::run_ao("generate -m " + f.dir() + " -p hi -n 2"),
               "unsupported architecture 'GPT2LMHeadModel'");
}

TEST(ModelErrors, MissingConfigFieldThroughCli) {
  FixtureCopy f;
  f.edit_config([](auto& j) { j.erase("hidden_size"); });
  expect_error(test::run_ao("perplexity -m " + f.dir() + " -f " + kLlama + "/reference.json"),
               "'hidden_size'");
}

TEST(ModelErrors, MissingTensorNamesIt) {
  FixtureCopy f;
  f.edit_tensors([](auto& t) {
    std::erase_if(t, [](const auto& x) { return x.name == "model.layers.1.mlp.down_proj.weight"; });
  });
  expect_error(test::run_ao("generate -m " + f.dir() + " -p hi -n 2"),
               "tensor 'model.layers.1.mlp.down_proj.weight' (shape [64, 128]) is missing");
}

TEST(ModelErrors, WrongTensorShapeNamesIt) {
  FixtureCopy f;
  f.edit_tensors([](auto& t) {
    for (auto& x : t)
      if (x.name == "model.layers.0.self_attn.k_proj.weight") x.tensor = x.tensor.t().contiguous();
  });
  expect_error(
      test::run_ao("bench -m " + f.dir() + " -p 4 -n 2 -r 1"),
      "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [64, 32], expected [32, 64]");
}

TEST(ModelErrors, TokenizerVocabularyMismatch) {
  AO_REQUIRE_SHARED_DATA();
  expect_error(test::run_ao("generate -m " + kLlama + " -p hi -n 2 --tokenizer " +
                            test::shared_data_dir() + "/tokenizers/llama2/tokenizer.model"),
               "has 32000 tokens but the model's vocabulary has 384");
}

TEST(ModelErrors, PromptLongerThanContext) {
  expect_error(test::run_ao("generate -m " + kLlama +
                            " -c 8 -n 4 -p 'To be, or not to be, that is the question.'"),
               "but the context holds 8");
}

TEST(ModelErrors, ContextLargerThanModelMaximum) {
  expect_error(test::run_ao("generate -m " + kLlama + " -c 100000 -p hi"),
               "context 100000 is larger than the model's maximum of 256 positions");
}

TEST(ModelErrors, BadSamplerAndBenchOptions) {
  expect_error(test::run_ao("generate -m " + kLlama + " -p hi --top-p 0"), "top_p");
  expect_error(test::run_ao("bench --synthetic gpt-5"), "unknown synthetic model 'gpt-5'");
  expect_error(test::run_ao("bench --synthetic stories15M --device cuda"), "not supported yet");
  expect_error(test::run_ao("bench --synthetic stories15M --ubatch-size 64"),
               "--ubatch-size applies to --device cuda only");
  const auto r = test::run_ao("bench --synthetic llama3-8b --device cuda --ubatch-size 0");
  EXPECT_EQ(r.exit_code, 2) << r.out;  // a usage error, before any model is made
  EXPECT_NE(r.out.find("--ubatch-size: Value 0 not in range 1 to 1048576"), std::string::npos)
      << r.out;
}

TEST(ModelErrors, SetWeightChecksNameAndShape) {
  auto m = models::load_model(kLlama);
  auto w = std::make_shared<quant::DenseWeight>(Tensor::zeros({64, 64}, DType::f32));
  EXPECT_THROW(m.model->set_weight("model.layers.9.mlp.up_proj", w), Error);
  try {
    m.model->set_weight("model.layers.0.mlp.up_proj", w);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj"), std::string::npos)
        << e.what();
  }
}

TEST(ModelErrors, TokenOutsideVocabulary) {
  auto m = models::load_model(kLlama);
  const int32_t bad = 384;
  std::vector<float> logits(384);
  EXPECT_THROW(m.model->forward(&bad, 1, logits.data(), false), Error);
}

}  // namespace
}  // namespace ao

// Loading paths: sharded checkpoints, 16-bit weights, a lone .safetensors file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ao/io/safetensors.h"
#include "ao/models/registry.h"
#include "test_util.h"

namespace ao {
namespace {
namespace fs = std::filesystem;

const std::string kQwen = test::fixtures_dir() + "/hf/qwen2";

std::vector<io::NamedTensor> fixture_tensors(const std::string& dir) {
  auto f = io::SafetensorsFile::open(dir + "/model.safetensors");
  std::vector<io::NamedTensor> t;
  for (const auto& e : f.entries()) t.push_back({e.name, f.tensor(e.name).clone()});
  return t;
}

std::vector<float> all_logits(models::CausalLM& m, const std::vector<int32_t>& ids) {
  std::vector<float> l(ids.size() * m.vocab_size());
  m.reset();
  m.forward(ids.data(), int64_t(ids.size()), l.data(), true);
  return l;
}

const std::vector<int32_t> kIds = {0, 17, 250, 3, 99, 140, 7, 300, 42};

TEST(ModelLoading, ShardedCheckpointEqualsSingleFile) {
  test::TempDir tmp;
  fs::copy_file(kQwen + "/config.json", tmp.file("config.json"));
  auto t = fixture_tensors(kQwen);
  const size_t half = t.size() / 2;
  std::vector<io::NamedTensor> a(t.begin(), t.begin() + half), b(t.begin() + half, t.end());
  io::save_safetensors(tmp.file("model-00001-of-00002.safetensors"), a);
  io::save_safetensors(tmp.file("model-00002-of-00002.safetensors"), b);
  nlohmann::json index;
  index["metadata"] = nlohmann::json::object();
  for (const auto& x : a) index["weight_map"][x.name] = "model-00001-of-00002.safetensors";
  for (const auto& x : b) index["weight_map"][x.name] = "model-00002-of-00002.safetensors";
  std::ofstream(tmp.file("model.safetensors.index.json")) << index.dump();
  auto sharded = models::load_model(tmp.path().string());
  auto single = models::load_model(kQwen);
  EXPECT_EQ(all_logits(*sharded.model, kIds), all_logits(*single.model, kIds));
}

// 16-bit weights are widened exactly: same logits as the f32 model holding the same values.
TEST(ModelLoading, HalfPrecisionWeightsMatchTheirF32Widening) {
  auto cfg = io::load_hf_config(kQwen + "/config.json");
  for (DType half : {DType::bf16, DType::f16}) {
    std::vector<io::NamedTensor> h, f;
    for (auto& x : fixture_tensors(kQwen)) {
      Tensor r = x.tensor.to(half);
      h.push_back({x.name, r});
      f.push_back({x.name, r.to(DType::f32)});
    }
    auto mh = models::build_model(cfg, h);
    auto mf = models::build_model(cfg, f);
    EXPECT_LT(mh->weight_bytes(), mf->weight_bytes() * 0.6);
    const auto lh = all_logits(*mh, kIds), lf = all_logits(*mf, kIds);
    double err = 0, scale = 0;
    for (size_t i = 0; i < lh.size(); ++i)
      err = std::max(err, double(std::abs(lh[i] - lf[i]))),
      scale = std::max(scale, double(std::abs(lf[i])));
    EXPECT_LT(err / scale, 1e-5) << dtype_name(half);
  }
}

TEST(ModelLoading, SafetensorsFileWithConfigNextToIt) {
  auto m = models::load_model(kQwen + "/model.safetensors");
  EXPECT_EQ(m.model->config().architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(m.model->config().tie_embeddings);
  auto single = models::load_model(kQwen);
  EXPECT_EQ(all_logits(*m.model, kIds), all_logits(*single.model, kIds));
  EXPECT_EQ(m.model->parameter_count(), m.model->config().parameter_count());
}

}  // namespace
}  // namespace ao

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "ao/io/llama2c.h"
#include "ao/io/model_files.h"
#include "test_util.h"

using namespace ao;
using namespace ao::io;

TEST(IoLlama2c, Stories260kConfigAndTensors) {
  AO_REQUIRE_SHARED_DATA();
  const std::string path = test::stories260k_dir() + "/stories260K.bin";
  Llama2cCheckpoint ck = load_llama2c(path);
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_EQ(c.parameter_count(), 260032);
  int64_t n = 0;
  for (const auto& t : ck.tensors) n += t.tensor.numel();
  EXPECT_EQ(n, 260032);
  // The first embedding value is the first float after the 28-byte header.
  std::ifstream in(path, std::ios::binary);
  in.seekg(28);
  float first = 0;
  in.read(reinterpret_cast<char*>(&first), 4);
  EXPECT_EQ(ck.tensors[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(ck.tensors[0].tensor.data<float>()[0], first);

  ModelFiles m = open_model_files(path);
  EXPECT_EQ(m.format, "llama2c");
  EXPECT_NE(m.tokenizer_path.find("tok512.bin"), std::string::npos);
}

TEST(IoConfig, ParsesHfConfigsAndRejectsBadOnes) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 128}, {"intermediate_size", 256},
                      {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"vocab_size", 1000}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0},
                      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}},
                      {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  ModelConfig c = parse_hf_config(j, "config.json");
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_EQ(c.parameter_count(), 1000 * 128 + 2 * (128 * 128 * 2 + 2 * 128 * 64 + 3 * 128 * 256 + 256) + 128);

  auto expect_error = [&](nlohmann::json bad, const std::string& needle) {
    try {
      parse_hf_config(bad, "config.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto bad = j;
  bad["architectures"] = {"GPTNeoXForCausalLM"};
  expect_error(bad, "unsupported architecture 'GPTNeoXForCausalLM'");
  bad = j;
  bad.erase("hidden_size");
  expect_error(bad, "missing required field 'hidden_size'");
  bad = j;
  bad["num_key_value_heads"] = 3;
  expect_error(bad, "num_key_value_heads");
  bad = j;
  bad["vocab_size"] = "big";
  expect_error(bad, "vocab_size");
  bad = j;
  bad["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error(bad, "yarn");
}

TEST(IoModelFiles, FolderWithoutConfigIsAClearError) {
  test::TempDir dir;
  try {
    open_model_files(dir.path().string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos);
  }
}

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "ao/core/mmap.h"
#include "test_util.h"

using namespace ao;

TEST(CliInfo, Stories260k) {
  AO_REQUIRE_SHARED_DATA();
  auto r = test::run_ao("info " + test::stories260k_dir() + "/stories260K.bin");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* s : {"dim: 64", "n_layers: 5", "n_heads: 8", "n_kv_heads: 4", "vocab_size: 512",
                        "parameters: 260032", "| model.layers.4.mlp.down_proj.weight | f32 | [64, 172] | 44032 |"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  auto j = test::run_ao("info --json " + test::stories260k_dir() + "/stories260K.bin");
  ASSERT_EQ(j.exit_code, 0) << j.out;
  auto parsed = nlohmann::json::parse(j.out);
  EXPECT_EQ(parsed["parameters"], 260032);
  EXPECT_EQ(parsed["config"]["n_kv_heads"], 4);
}

// Every malformed file of the corpus gives exit code 1 and a clear message — never a crash.
TEST(CliInfo, MalformedCorpusGivesClearErrors) {
  const std::string dir = test::fixtures_dir() + "/malformed";
  auto manifest = nlohmann::json::parse(read_text_file(dir + "/manifest.json"));
  ASSERT_GE(manifest.size(), 20u);
  for (auto it = manifest.begin(); it != manifest.end(); ++it) {
    auto r = test::run_ao("info " + dir + "/" + it.key());
    EXPECT_EQ(r.signal, 0) << it.key() << " crashed";
    EXPECT_EQ(r.exit_code, 1) << it.key() << "\n" << r.out;
    EXPECT_NE(r.out.find("error: "), std::string::npos) << it.key() << "\n" << r.out;
    EXPECT_NE(r.out.find(it.key()), std::string::npos) << "message must name the file\n" << r.out;
    EXPECT_NE(r.out.find(it.value().get<std::string>()), std::string::npos)
        << it.key() << ": expected '" << it.value().get<std::string>() << "' in\n" << r.out;
  }
}

TEST(CliInfo, UsageErrors) {
  EXPECT_EQ(test::run_ao("info").exit_code, 2);
  EXPECT_EQ(test::run_ao("frobnicate").exit_code, 2);
  EXPECT_EQ(test::run_ao("info --bogus x").exit_code, 2);
  auto r = test::run_ao("info /definitely/not/here");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no such file"), std::string::npos) << r.out;
}

TEST(CliTokenize, GoldenSentenceOnStories260k) {
  AO_REQUIRE_SHARED_DATA();
  auto r = test::run_ao("tokenize --json --bos -m " + test::stories260k_dir() +
                        "/stories260K.bin -p 'One day, a clever fox found a shiny key under the old oak tree.'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["n_tokens"], 35);  // the golden count of ../shared/data/README.md
  EXPECT_EQ(j["ids"][0], 1);
  auto bad = test::run_ao("tokenize -m " + test::stories260k_dir() + "/stories260K.bin");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("--prompt"), std::string::npos) << bad.out;
}

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ao/core/error.h"
#include "ao/text/tokenizer.h"
#include "text/test_data.h"
#include "text/unicode.h"

namespace {

using ao::text::EncodeOptions;
using ao::text::Tokenizer;
namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A llama.cpp tokenizer test file pair: `.inp` holds the texts, each followed by the line
// "__ggml_vocab_test__"; `.out` holds one line of space-separated ids per text.
struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<VocabCase> read_llamacpp_cases(const std::string& inp_path,
                                           const std::string& out_path) {
  const std::string inp = read_file(inp_path);
  const std::string out = read_file(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<VocabCase> cases;
  for (size_t pos = 0;;) {
    const size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) break;
    cases.push_back({inp.substr(pos, hit - pos), {}});
    pos = hit + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) cases[i].ids.push_back(id);
    ++i;
  }
  EXPECT_EQ(i, cases.size()) << out_path << " has a different number of cases than " << inp_path;
  return cases;
}

std::vector<VocabCase> read_llamacpp_cases(const std::string& base) {
  return read_llamacpp_cases(base + ".inp", base + ".out");
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

void expect_llamacpp_vectors(const Tokenizer& tok, const std::string& base) {
  const auto cases = read_llamacpp_cases(base);
  ASSERT_GT(cases.size(), 30u);
  for (const VocabCase& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, false);
    EXPECT_EQ(got, c.ids) << tok.description() << "\ntext: '" << c.text << "'\n got: " << show(got)
                          << "\nwant: " << show(c.ids);
  }
}

void expect_round_trip(const Tokenizer& tok, const std::string& base) {
  for (const VocabCase& c : read_llamacpp_cases(base)) {
    const std::vector<int32_t> ids = tok.encode(c.text, true);
    EXPECT_EQ(tok.decode(ids), c.text) << tok.description();
    // Streaming gives the same text, one token at a time.
    ao::text::TokenStreamDecoder stream(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.finish();
    EXPECT_EQ(streamed, c.text) << tok.description();
  }
}

// Time bounds are for optimized builds; sanitizer and debug builds get ten times as long.
#if defined(__SANITIZE_ADDRESS__) || !defined(NDEBUG)
constexpr double kSlowBuild = 10.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr double kSlowBuild = 10.0;
#else
constexpr double kSlowBuild = 1.0;
#endif
#else
constexpr double kSlowBuild = 1.0;
#endif

const std::string kSpmBase = "tokenizers/llamacpp-vocab/ggml-vocab-llama-spm.gguf";
const std::string kGpt2Base = "tokenizers/llamacpp-vocab/ggml-vocab-gpt-2.gguf";

// ---- llama2.c ------------------------------------------------------------------------

TEST(TokenizerLlama2c, GoldenSentenceOnStories260K) {
  const std::string path = ao::test::shared_data("models/stories260K/tok512.bin");
  AO_REQUIRE_DATA(path);
  const auto tok = ao::text::load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::string text = "One day, a clever fox found a shiny key under the old oak tree.";
  const std::vector<int32_t> ids = tok->encode(text, true);
  EXPECT_EQ(ids.size(), 35u) << show(ids);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_TRUE(tok->default_add_bos());
  EXPECT_EQ(tok->decode(ids), text);
  // The greedy sample of the model starts with these ids; they decode to its first words.
  const std::vector<int32_t> greedy = {1,   403, 407, 261, 378, 432, 383, 286,
                                       261, 376, 298, 315, 421, 395, 317, 426};
  const std::string sample =
      read_file(ao::test::shared_data("models/stories260K/stories260K.greedy.txt"));
  const std::string decoded = tok->decode(greedy);
  EXPECT_EQ(sample.substr(0, decoded.size()), decoded);
}

// The perplexity protocol of shared/data/README.md: the first 100000 characters split on blank
// lines, each paragraph encoded without BOS and followed by token 13, give 46731 tokens.
TEST(TokenizerLlama2c, TinyStoriesProtocolTokenCount) {
  const std::string path = ao::test::shared_data("models/stories260K/tok512.bin");
  const std::string text_path = ao::test::shared_data("text/tinystories_valid_a.txt");
  AO_REQUIRE_DATA(path);
  AO_REQUIRE_DATA(text_path);
  const auto tok = ao::text::load_tokenizer(path);
  const std::string text = read_file(text_path).substr(0, 100000);
  size_t total = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t hit = text.find("\n\n", pos);
    if (hit == std::string::npos) hit = text.size();
    std::string para = text.substr(pos, hit - pos);
    pos = hit + 2;
    while (!para.empty() && (para.back() == '\n' || para.back() == ' ')) para.pop_back();
    while (!para.empty() && (para.front() == '\n' || para.front() == ' ')) para.erase(0, 1);
    if (!para.empty()) total += tok->encode(para, false).size() + 1;
  }
  EXPECT_EQ(total, 46731u);
}

TEST(TokenizerLlama2c, Llama2VocabMatchesLlamaCppVectors) {
  const std::string path = ao::test::shared_data("tokenizers/llama2/tokenizer.bin");
  AO_REQUIRE_DATA(path);
  AO_REQUIRE_DATA(ao::test::shared_data(kSpmBase + ".inp"));
  expect_llamacpp_vectors(*ao::text::load_llama2c_tokenizer(path), ao::test::shared_data(kSpmBase));
}

TEST(TokenizerLlama2c, TruncatedFileIsAClearError) {
  const std::string path = ao::test::shared_data("models/stories260K/tok512.bin");
  AO_REQUIRE_DATA(path);
  const std::string bytes = read_file(path);
  const fs::path tmp = fs::temp_directory_path() / "ao_test_truncated_tok.bin";
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 3));
  }
  try {
    ao::text::load_tokenizer(tmp.string());
    FAIL() << "expected ao::Error";
  } catch (const ao::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(tmp.string()), std::string::npos) << what;
    EXPECT_NE(what.find("truncated"), std::string::npos) << what;
  }
  fs::remove(tmp);
}

// ---- SentencePiece (llama vocabulary) --------------------------------------------------

TEST(TokenizerSentencePiece, LlamaCppVectors) {
  const std::string path = ao::test::shared_data("tokenizers/llama2/tokenizer.model");
  AO_REQUIRE_DATA(path);
  AO_REQUIRE_DATA(ao::test::shared_data(kSpmBase + ".inp"));
  const auto tok = ao::text::load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->adds_space_prefix());
  expect_llamacpp_vectors(*tok, ao::test::shared_data(kSpmBase));
  expect_round_trip(*tok, ao::test::shared_data(kSpmBase));
}

TEST(TokenizerGgufVocab, LlamaSpmVectors) {
  const std::string path = ao::test::shared_data(kSpmBase);
  AO_REQUIRE_DATA(path);
  const auto tok = ao::text::load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  expect_llamacpp_vectors(*tok, path);
  expect_round_trip(*tok, path);
}

TEST(TokenizerGgufVocab, Gpt2Vectors) {
  const std::string path = ao::test::shared_data(kGpt2Base);
  AO_REQUIRE_DATA(path);
  const auto tok = ao::text::load_tokenizer(path);
  expect_llamacpp_vectors(*tok, path);
  expect_round_trip(*tok, path);
}

// ---- GPT-2 encoder.json + vocab.bpe ----------------------------------------------------

TEST(TokenizerGpt2, LlamaCppVectors) {
  const std::string dir = ao::test::shared_data("tokenizers/gpt2");
  AO_REQUIRE_DATA(dir + "/encoder.json");
  AO_REQUIRE_DATA(ao::test::shared_data(kGpt2Base + ".inp"));
  const auto tok = ao::text::load_tokenizer(dir);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_FALSE(tok->default_add_bos());
  expect_llamacpp_vectors(*tok, ao::test::shared_data(kGpt2Base));
  expect_round_trip(*tok, ao::test::shared_data(kGpt2Base));
}

TEST(TokenizerGpt2, SpecialTokensOnlyWhenAsked) {
  const std::string dir = ao::test::shared_data("tokenizers/gpt2");
  AO_REQUIRE_DATA(dir + "/encoder.json");
  const auto tok = ao::text::load_tokenizer(dir);
  const std::string text = "a<|endoftext|>b";
  EXPECT_EQ(tok->encode(text, EncodeOptions{.parse_special = true}),
            (std::vector<int32_t>{64, 50256, 65}));
  const auto plain = tok->encode(text, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 50256), 0);
  EXPECT_EQ(tok->decode(plain), text);
}

// ---- tokenizer.json fixtures made with the tokenizers library -------------------------

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, MatchesTokenizersLibrary) {
  const std::string dir = std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/";
  const auto tok = ao::text::load_tokenizer(dir + GetParam());
  const auto expected = nlohmann::json::parse(read_file(dir + GetParam() + ".expected.json"));
  int checked = 0;
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"];
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const auto ids_special = c["ids_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text, EncodeOptions{.add_bos = false, .parse_special = true}), ids)
        << GetParam() << " text: '" << text << "'";
    EXPECT_EQ(tok->encode(text, EncodeOptions{.add_bos = true, .parse_special = true}), ids_special)
        << GetParam() << " text: '" << text << "'";
    EXPECT_EQ(tok->decode(ids), c["decoded"].get<std::string>())
        << GetParam() << " text: '" << text << "'";
    ++checked;
  }
  EXPECT_GT(checked, 40);
  // The template adds BOS exactly when the library adds something with special tokens on.
  EXPECT_EQ(tok->default_add_bos(), GetParam() == "llama3_style" || GetParam() == "spm_style");
}

INSTANTIATE_TEST_SUITE_P(TokenizerJson, HfFixture,
                         ::testing::Values("gpt2_style", "llama3_style", "qwen2_style", "spm_style",
                                           "metaspace_style", "metaspace_split_style",
                                           "lowercase_style"));

TEST(TokenizerJson, ConfigSuppliesBosEos) {
  const std::string fixture = std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/qwen2_style";
  const auto plain = ao::text::load_tokenizer(fixture);
  EXPECT_EQ(plain->bos_id(), -1);
  EXPECT_EQ(plain->eos_id(), *plain->piece_to_id("<|endoftext|>"));
  EXPECT_FALSE(plain->default_add_bos());

  const fs::path dir = fs::temp_directory_path() / "ao_test_tokenizer_config";
  fs::create_directories(dir);
  fs::copy_file(fixture + "/tokenizer.json", dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": null, "eos_token": {"content": "<|im_end|>"}, "add_bos_token": false})";
  const auto tok = ao::text::load_tokenizer(dir.string());
  EXPECT_EQ(tok->eos_id(), *tok->piece_to_id("<|im_end|>"));
  EXPECT_EQ(tok->bos_id(), -1);

  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|nope|>"})";
  try {
    ao::text::load_tokenizer(dir.string());
    FAIL() << "expected ao::Error";
  } catch (const ao::Error& e) {
    EXPECT_NE(std::string(e.what()).find("EOS token '<|nope|>' is not in the vocabulary"),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

// Large differential run against SentencePiece and the tokenizers library; the vectors are
// made by scripts/fixtures/make_differential_vectors.py (too large to commit).
TEST(TokenizerDifferential, AgainstReferenceLibraries) {
  const char* dir = std::getenv("AO_TOKENIZER_DIFF_DIR");
  if (!dir || !*dir)
    GTEST_SKIP() << "set AO_TOKENIZER_DIFF_DIR to the output of "
                    "scripts/fixtures/make_differential_vectors.py";
  const std::string d = dir;
  const std::string fixtures = std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/";
  const std::vector<std::pair<std::string, std::string>> runs = {
      {ao::test::shared_data("tokenizers/llama2/tokenizer.model"), "llama_spm"},
      {ao::test::shared_data("tokenizers/llama2/tokenizer.bin"), "llama_spm"},
      {ao::test::shared_data(kSpmBase), "llama_spm"},
      {ao::test::shared_data("tokenizers/gpt2"), "gpt2"},
      {ao::test::shared_data(kGpt2Base), "gpt2"},
      {fixtures + "gpt2_style", "gpt2_style"},
      {fixtures + "llama3_style", "llama3_style"},
      {fixtures + "qwen2_style", "qwen2_style"},
      {fixtures + "spm_style", "spm_style"},
      {fixtures + "metaspace_style", "metaspace_style"},
      {fixtures + "metaspace_split_style", "metaspace_split_style"},
      {fixtures + "lowercase_style", "lowercase_style"}};
  for (const auto& [path, name] : runs) {
    if (!fs::exists(path)) continue;
    const auto tok = ao::text::load_tokenizer(path);
    int mismatches = 0;
    for (const VocabCase& c : read_llamacpp_cases(d + "/corpus.inp", d + "/" + name + ".out")) {
      if (tok->encode(c.text, false) != c.ids && ++mismatches <= 3)
        ADD_FAILURE() << tok->description() << " differs on: '" << c.text << "'";
    }
    EXPECT_EQ(mismatches, 0) << tok->description();
  }
}

// ---- bad input -----------------------------------------------------------------------

std::string expect_error(const std::string& json_text) {
  try {
    ao::text::parse_hf_tokenizer(json_text, "bad/tokenizer.json");
  } catch (const ao::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected ao::Error for: " << json_text;
  return {};
}

TEST(TokenizerBadInput, MalformedJson) {
  const std::string what = expect_error("{\"model\": {\"type\": \"BPE\", ");
  EXPECT_NE(what.find("bad/tokenizer.json"), std::string::npos) << what;
  EXPECT_NE(what.find("malformed JSON"), std::string::npos) << what;
}

TEST(TokenizerBadInput, UnknownModelType) {
  const std::string what = expect_error(R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
  EXPECT_NE(what.find("bad/tokenizer.json"), std::string::npos) << what;
  EXPECT_NE(what.find("Unigram"), std::string::npos) << what;
}

TEST(TokenizerBadInput, BrokenFields) {
  EXPECT_NE(expect_error(R"({"nothing": 1})").find("missing field 'model'"), std::string::npos);
  EXPECT_NE(
      expect_error(R"({"model": {"type": "BPE", "vocab": {"a": "x"}}})").find("not an integer id"),
      std::string::npos);
  EXPECT_NE(
      expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})")
          .find("'ab' is not in the vocabulary"),
      std::string::npos);
  EXPECT_NE(
      expect_error(
          R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "Bert"}})")
          .find("pre-tokenizer type 'Bert'"),
      std::string::npos);
  EXPECT_NE(expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "byte_fallback": 3}})")
                .find("wrong type"),
            std::string::npos);
}

TEST(TokenizerBadInput, UnknownPathAndKind) {
  EXPECT_THROW(ao::text::load_tokenizer("/nonexistent/tokenizer.model"), ao::Error);
  const fs::path tmp = fs::temp_directory_path() / "ao_test_tokenizer.txt";
  std::ofstream(tmp) << "hello";
  try {
    ao::text::load_tokenizer(tmp.string());
    FAIL() << "expected ao::Error";
  } catch (const ao::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown kind"), std::string::npos) << e.what();
  }
  fs::remove(tmp);
}

TEST(TokenizerBadInput, TokenizerLargerThanModel) {
  const std::string path = ao::test::shared_data("models/stories260K/tok512.bin");
  AO_REQUIRE_DATA(path);
  const auto tok = ao::text::load_tokenizer(path);
  EXPECT_NO_THROW(ao::text::check_tokenizer_fits_model(*tok, 512, "stories260K"));
  EXPECT_NO_THROW(ao::text::check_tokenizer_fits_model(*tok, 576, "padded"));
  try {
    ao::text::check_tokenizer_fits_model(*tok, 256, "small");
    FAIL();
  } catch (const ao::Error& e) {
    EXPECT_NE(std::string(e.what()).find("512 tokens but model 'small' has a vocabulary of 256"),
              std::string::npos)
        << e.what();
  }
}

TEST(TokenizerBadInput, IdOutOfRange) {
  const auto tok =
      ao::text::parse_hf_tokenizer(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})", "t.json");
  EXPECT_THROW(tok->decode(std::vector<int32_t>{5}), ao::Error);
  EXPECT_THROW(tok->piece(-1), ao::Error);
}

// ---- streaming and performance -------------------------------------------------------

TEST(TokenizerStream, HoldsBackPartialUtf8) {
  const std::string path = ao::test::shared_data("tokenizers/llama2/tokenizer.model");
  AO_REQUIRE_DATA(path);
  const auto tok = ao::text::load_tokenizer(path);
  // "🦙" is not in the llama vocabulary: four byte tokens.
  const auto ids = tok->encode("a 🦙!", false);
  ao::text::TokenStreamDecoder stream(*tok);
  std::vector<std::string> parts;
  for (int32_t id : ids) parts.push_back(stream.push(id));
  EXPECT_EQ(parts.front(), "a");
  std::string all;
  for (auto& p : parts) {
    EXPECT_EQ(ao::text::detail::utf8_sanitize(p), p);
    EXPECT_EQ(ao::text::detail::utf8_complete_prefix(p), p.size());
    all += p;
  }
  EXPECT_EQ(all + stream.finish(), "a 🦙!");
  EXPECT_EQ(tok->token_bytes(*tok->piece_to_id("<0xF0>")), "\xF0");
}

TEST(TokenizerPerf, HundredThousandCharactersUnderASecond) {
  const std::string text_path = ao::test::shared_data("text/tinystories_valid_a.txt");
  AO_REQUIRE_DATA(text_path);
  const std::string text = read_file(text_path).substr(0, 100000);
  std::vector<std::string> paths = {ao::test::shared_data("models/stories260K/tok512.bin"),
                                    ao::test::shared_data("tokenizers/llama2/tokenizer.bin"),
                                    ao::test::shared_data("tokenizers/gpt2"),
                                    ao::test::shared_data(kSpmBase)};
  for (const std::string& p : paths) {
    if (!fs::exists(p)) continue;
    const auto tok = ao::text::load_tokenizer(p);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text, true);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 1.0 * kSlowBuild)
        << tok->description() << " took " << s << " s for 100k characters";
    std::printf("encode 100k characters: %.3f s, %zu tokens, %s\n", s, ids.size(),
                tok->description().c_str());
    EXPECT_GT(ids.size(), 10000u);
    EXPECT_EQ(tok->decode(ids), text) << tok->description();
  }
}

TEST(TokenizerRobustness, LongRunsAndInvalidUtf8) {
  std::vector<std::string> paths = {
      ao::test::shared_data("models/stories260K/tok512.bin"),
      ao::test::shared_data("tokenizers/llama2/tokenizer.model"),
      ao::test::shared_data("tokenizers/gpt2"),
      std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/llama3_style",
      std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/qwen2_style",
      std::string(AO_SOURCE_DIR) + "/tests/text/fixtures/spm_style"};
  std::string random_bytes;
  uint32_t state = 12345;
  for (int i = 0; i < 20000; ++i) {
    state = state * 1664525u + 1013904223u;
    random_bytes += static_cast<char>(state >> 24);
  }
  std::string emoji;
  for (int i = 0; i < 5000; ++i) emoji += "🦙";
  const std::vector<std::string> inputs = {std::string(50000, ' '),
                                           std::string(50000, '\n'),
                                           std::string(50000, 'x'),
                                           std::string(20000, '3'),
                                           emoji,
                                           random_bytes,
                                           std::string("a\0b", 3),
                                           "\xF0\x9F",
                                           "\xE2\x96"};
  for (const std::string& p : paths) {
    if (!fs::exists(p)) continue;
    const auto tok = ao::text::load_tokenizer(p);
    for (const std::string& in : inputs) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok->encode(in, true);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_LT(secs, 1.0 * kSlowBuild)
          << tok->description() << " input of " << in.size() << " bytes";
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok->vocab_size()) << tok->description();
      const std::string out = tok->decode(ids);
      EXPECT_EQ(ao::text::detail::utf8_sanitize(out), out);
      if (ao::text::detail::utf8_sanitize(in) == in && in.find('\0') == std::string::npos)
        EXPECT_EQ(out, in) << tok->description() << " input of " << in.size() << " bytes";
    }
  }
}

}  // namespace

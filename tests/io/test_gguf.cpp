#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "ao/core/error.h"
#include "ao/io/gguf.h"
#include "text/test_data.h"

namespace {

using ao::GgufFile;
using ao::GgufType;

// Writes GGUF bytes field by field.
class GgufBytes {
 public:
  template <class T>
  GgufBytes& pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBytes& str(const std::string& s) {
    pod<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufBytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    bytes.insert(bytes.end(), {'G', 'G', 'U', 'F'});
    return pod<uint32_t>(version).pod<uint64_t>(n_tensors).pod<uint64_t>(n_kv);
  }
  GgufBytes& key(const std::string& k, GgufType t) {
    return str(k).pod<uint32_t>(static_cast<uint32_t>(t));
  }
  GgufBytes& pad_to(size_t align) {
    while (bytes.size() % align) bytes.push_back(0);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

// A file with one key of every type, a nested array and two tensors.
std::vector<uint8_t> sample_file() {
  GgufBytes b;
  b.header(2, 15);
  b.key("u8", GgufType::uint8).pod<uint8_t>(200);
  b.key("i8", GgufType::int8).pod<int8_t>(-5);
  b.key("u16", GgufType::uint16).pod<uint16_t>(60000);
  b.key("i16", GgufType::int16).pod<int16_t>(-30000);
  b.key("u32", GgufType::uint32).pod<uint32_t>(4000000000u);
  b.key("i32", GgufType::int32).pod<int32_t>(-7);
  b.key("f32", GgufType::float32).pod<float>(1.5f);
  b.key("bool", GgufType::boolean).pod<uint8_t>(1);
  b.key("str", GgufType::string).str("hello");
  b.key("u64", GgufType::uint64).pod<uint64_t>(1ull << 40);
  b.key("i64", GgufType::int64).pod<int64_t>(-(1ll << 40));
  b.key("f64", GgufType::float64).pod<double>(0.25);
  b.key("strings", GgufType::array).pod<uint32_t>(8).pod<uint64_t>(2).str("a").str("bc");
  b.key("nested", GgufType::array)
      .pod<uint32_t>(9)
      .pod<uint64_t>(1)
      .pod<uint32_t>(5)
      .pod<uint64_t>(2)
      .pod<int32_t>(3)
      .pod<int32_t>(4);
  b.key("general.alignment", GgufType::uint32).pod<uint32_t>(64);
  // tensor "w": F32 [4, 2] at 0; tensor "q": Q8_0 [64] at 64.
  b.str("w").pod<uint32_t>(2).pod<uint64_t>(4).pod<uint64_t>(2).pod<uint32_t>(0).pod<uint64_t>(0);
  b.str("q").pod<uint32_t>(1).pod<uint64_t>(64).pod<uint32_t>(8).pod<uint64_t>(64);
  b.pad_to(64);
  for (int i = 0; i < 8; ++i) b.pod<float>(static_cast<float>(i));
  b.pad_to(64);
  for (int i = 0; i < 68; ++i) b.pod<uint8_t>(static_cast<uint8_t>(i));
  return b.bytes;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
  } catch (const ao::Error& e) {
    return e.what();
  }
  return {};
}

TEST(Gguf, ReadsEveryValueTypeAndTensorInfos) {
  const auto bytes = sample_file();
  const GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.get_int("u8", 0), 200);
  EXPECT_EQ(f.get_int("i8", 0), -5);
  EXPECT_EQ(f.get_int("u16", 0), 60000);
  EXPECT_EQ(f.get_int("i16", 0), -30000);
  EXPECT_EQ(f.get_int("u32", 0), 4000000000ll);
  EXPECT_EQ(f.get_int("i32", 0), -7);
  EXPECT_EQ(f.at("f32").to_double("f32"), 1.5);
  EXPECT_TRUE(f.get_bool("bool", false));
  EXPECT_EQ(f.get_string("str", ""), "hello");
  EXPECT_EQ(f.get_int("u64", 0), 1ll << 40);
  EXPECT_EQ(f.get_int("i64", 0), -(1ll << 40));
  EXPECT_EQ(f.at("f64").to_double("f64"), 0.25);
  EXPECT_EQ(f.get_string_array("strings"), (std::vector<std::string>{"a", "bc"}));
  const auto& nested = f.at("nested").to_array("nested");
  ASSERT_EQ(nested.size(), 1u);
  EXPECT_EQ(nested[0].array_type(), GgufType::int32);
  EXPECT_EQ(nested[0].to_array("nested")[1].to_int("nested"), 4);
  EXPECT_EQ(f.get_int("missing", 42), 42);

  ASSERT_EQ(f.tensors().size(), 2u);
  const auto* w = f.find_tensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(w->size, 32u);
  float w5;
  std::memcpy(&w5, f.tensor_data(*w) + 5 * 4, 4);
  EXPECT_EQ(w5, 5.0f);
  const auto* q = f.find_tensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->size, 68u);  // 2 blocks of 34 bytes
  EXPECT_EQ(f.tensor_data(*q)[0], 0);
}

TEST(Gguf, WrongTypeAccessNamesFileAndKey) {
  const auto bytes = sample_file();
  const GgufFile f = GgufFile::parse(bytes.data(), bytes.size(), "mem.gguf");
  try {
    f.get_string("u8", "");
    FAIL();
  } catch (const ao::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mem.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'u8'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f.at("nope"), ao::Error);
  EXPECT_THROW(f.get_string_array("str"), ao::Error);
}

TEST(Gguf, EveryTruncationIsAnError) {
  const auto bytes = sample_file();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string what = parse_error(cut);
    EXPECT_FALSE(what.empty()) << "no error for a file cut at " << n << " bytes";
    EXPECT_NE(what.find("mem.gguf"), std::string::npos) << what;
  }
}

TEST(Gguf, RejectsBadHeadersAndInfos) {
  EXPECT_NE(parse_error({'G', 'G', 'U', 'X', 3, 0, 0, 0}).find("bad magic"), std::string::npos);
  {
    GgufBytes b;
    b.header(0, 0, 7);
    EXPECT_NE(parse_error(b.bytes).find("unknown version 7"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 0, 1);
    EXPECT_NE(parse_error(b.bytes).find("version 1"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 1ull << 60);
    EXPECT_NE(parse_error(b.bytes).find("metadata count"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 1).key("k", GgufType::string).pod<uint64_t>(1ull << 62);
    EXPECT_NE(parse_error(b.bytes).find("truncated"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 1).key("k", GgufType::array).pod<uint32_t>(6).pod<uint64_t>(1ull << 40);
    EXPECT_NE(parse_error(b.bytes).find("claims"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 1).str("k").pod<uint32_t>(99);
    EXPECT_NE(parse_error(b.bytes).find("unknown value type 99"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 2)
        .key("k", GgufType::uint8)
        .pod<uint8_t>(1)
        .key("k", GgufType::uint8)
        .pod<uint8_t>(2);
    EXPECT_NE(parse_error(b.bytes).find("duplicate metadata key 'k'"), std::string::npos);
  }
  {
    GgufBytes b;
    b.header(0, 1).key("k", GgufType::boolean).pod<uint8_t>(2);
    EXPECT_NE(parse_error(b.bytes).find("bool"), std::string::npos);
  }
  {  // misaligned tensor offset
    GgufBytes b;
    b.header(1, 0).str("t").pod<uint32_t>(1).pod<uint64_t>(4).pod<uint32_t>(0).pod<uint64_t>(3);
    EXPECT_NE(parse_error(b.bytes).find("not a multiple of the alignment"), std::string::npos);
  }
  {  // tensor past the end of the file
    GgufBytes b;
    b.header(1, 0).str("t").pod<uint32_t>(1).pod<uint64_t>(1024).pod<uint32_t>(0).pod<uint64_t>(0);
    b.pad_to(32);
    EXPECT_NE(parse_error(b.bytes).find("extends past the end"), std::string::npos);
  }
  {  // unknown ggml type
    GgufBytes b;
    b.header(1, 0).str("t").pod<uint32_t>(1).pod<uint64_t>(4).pod<uint32_t>(4).pod<uint64_t>(0);
    EXPECT_NE(parse_error(b.bytes).find("unknown ggml type 4"), std::string::npos);
  }
  {  // row length not a multiple of the block
    GgufBytes b;
    b.header(1, 0).str("t").pod<uint32_t>(1).pod<uint64_t>(33).pod<uint32_t>(2).pod<uint64_t>(0);
    EXPECT_NE(parse_error(b.bytes).find("block size"), std::string::npos);
  }
  {  // too many dimensions
    GgufBytes b;
    b.header(1, 0).str("t").pod<uint32_t>(5).pad_to(64);
    EXPECT_NE(parse_error(b.bytes).find("dimensions"), std::string::npos);
  }
  {  // duplicate tensor names
    GgufBytes b;
    b.header(2, 0);
    for (int i = 0; i < 2; ++i)
      b.str("t").pod<uint32_t>(1).pod<uint64_t>(1).pod<uint32_t>(0).pod<uint64_t>(0);
    b.pad_to(32).pod<float>(0);
    EXPECT_NE(parse_error(b.bytes).find("duplicate tensor name 't'"), std::string::npos);
  }
  {  // bad alignment value
    GgufBytes b;
    b.header(0, 1).key("general.alignment", GgufType::uint32).pod<uint32_t>(24);
    EXPECT_NE(parse_error(b.bytes).find("power of two"), std::string::npos);
  }
}

TEST(Gguf, ReadsLlamaCppVocabFiles) {
  const std::string spm =
      ao::test::shared_data("tokenizers/llamacpp-vocab/ggml-vocab-llama-spm.gguf");
  AO_REQUIRE_DATA(spm);
  const GgufFile f = GgufFile::open(spm);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model", ""), "llama");
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 32000u);
  EXPECT_EQ(f.get_number_array("tokenizer.ggml.scores").size(), 32000u);
  EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id", -1), 1);
  const GgufFile g =
      GgufFile::open(ao::test::shared_data("tokenizers/llamacpp-vocab/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(g.get_string("tokenizer.ggml.model", ""), "gpt2");
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.merges").size(), 50000u);
}

TEST(Gguf, MissingFileIsAnError) {
  EXPECT_THROW(GgufFile::open("/nonexistent/model.gguf"), ao::Error);
}

}  // namespace

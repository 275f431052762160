#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "ao/io/safetensors.h"
#include "test_util.h"

using namespace ao;
using namespace ao::io;
namespace fs = std::filesystem;

namespace {
Tensor pattern(const Shape& s, DType dt, int seed) {
  Tensor t = Tensor::empty(s, dt);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(i * 131 + seed * 7);
  return t;
}
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}
}  // namespace

TEST(IoSafetensors, RoundTripEveryDtypeAndMetadata) {
  test::TempDir dir;
  std::vector<NamedTensor> ts;
  int i = 0;
  for (DType dt : {DType::f32, DType::f64, DType::f16, DType::bf16, DType::f8_e4m3fn, DType::f8_e5m2,
                   DType::e8m0, DType::i8, DType::u8, DType::i16, DType::u16, DType::i32, DType::u32,
                   DType::i64, DType::u64, DType::boolean}) {
    ts.push_back({std::string("t.") + dtype_name(dt), pattern({3, 5}, dt, i++)});
  }
  ts.push_back({"scalar", pattern({}, DType::f32, 99)});
  ts.push_back({"empty", Tensor::empty({0, 4}, DType::f32)});
  ts.push_back({"strided", pattern({4, 6}, DType::f32, 5).t()});  // non-contiguous input
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode"}};
  const std::string path = dir.file("a.safetensors");
  save_safetensors(path, ts, meta);

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.entries().size(), ts.size());
  for (const auto& nt : ts) {
    Tensor r = f.tensor(nt.name);
    EXPECT_EQ(r.dtype(), nt.tensor.dtype()) << nt.name;
    EXPECT_EQ(r.shape(), nt.tensor.shape()) << nt.name;
    EXPECT_TRUE(same_bytes(r, nt.tensor.contiguous())) << nt.name;
  }
  // The data region starts 8-byte aligned, as the reference writer does.
  uint64_t n = 0;
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_THROW(f.tensor("missing"), Error);
}

TEST(IoSafetensors, ViewsOutliveTheFileObject) {
  test::TempDir dir;
  const std::string path = dir.file("b.safetensors");
  Tensor src = pattern({64}, DType::f32, 3);
  save_safetensors(path, {{"x", src}});
  Tensor view;
  { view = SafetensorsFile::open(path).tensor("x"); }
  EXPECT_TRUE(same_bytes(view, src));
}

TEST(IoSafetensors, WriteIsAtomic) {
  test::TempDir dir;
  const std::string path = dir.file("c.safetensors");
  save_safetensors(path, {{"x", pattern({8}, DType::f32, 1)}});
  const auto before = fs::file_size(path);
  // A failing write (bad second tensor) leaves the old file untouched and no temp file behind.
  EXPECT_THROW(save_safetensors(path, {{"y", pattern({100}, DType::f32, 2)}, {"z", Tensor()}}), Error);
  EXPECT_EQ(fs::file_size(path), before);
  EXPECT_THROW(save_safetensors(path, {{"a", pattern({2}, DType::f32, 2)}, {"a", pattern({2}, DType::f32, 2)}}),
               Error);
  EXPECT_THROW(save_safetensors(path, {{"p", Tensor::empty({4}, DType::u4x2)}}), Error);
  int files = 0;
  for (auto& e : fs::directory_iterator(dir.path())) ++files, (void)e;
  EXPECT_EQ(files, 1);
  EXPECT_THROW(save_safetensors(dir.file("no/such/dir/x.safetensors"), {{"x", pattern({2}, DType::f32, 1)}}),
               Error);
}

TEST(IoSafetensors, ShardedCheckpointWithIndex) {
  test::TempDir dir;
  Tensor a = pattern({4, 4}, DType::bf16, 1), b = pattern({3}, DType::f32, 2), c = pattern({2, 2}, DType::i8, 3);
  save_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", a}, {"b", b}});
  save_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"c", c}});
  {
    std::ofstream idx(dir.file("model.safetensors.index.json"));
    idx << R"({"metadata": {"total_size": 52}, "weight_map": {"a": "model-00001-of-00002.safetensors",
          "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})";
  }
  Checkpoint ck = Checkpoint::open(dir.path().string());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(same_bytes(ck.tensor("c"), c));
  EXPECT_EQ(ck.entry("a").dtype, DType::bf16);
  EXPECT_THROW(ck.tensor("d"), Error);
  {
    std::ofstream idx(dir.file("model.safetensors.index.json"));
    idx << R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "zz": "model-00002-of-00002.safetensors"}})";
  }
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
  {
    std::ofstream idx(dir.file("model.safetensors.index.json"));
    idx << R"({"weight_map": {"a": "../../etc/passwd"}})";
  }
  EXPECT_THROW(Checkpoint::open(dir.path().string()), Error);
}

TEST(IoSafetensors, HeaderParserRejectsBadHeaders) {
  std::map<std::string, std::string> meta;
  EXPECT_NO_THROW(parse_safetensors_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, &meta, "t"));
  EXPECT_THROW(parse_safetensors_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12, &meta, "t"),
               Error);  // trailing bytes not covered
  EXPECT_THROW(parse_safetensors_header(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8, &meta, "t"),
               Error);
  EXPECT_THROW(parse_safetensors_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, &meta, "t"),
               Error);
  EXPECT_THROW(parse_safetensors_header(R"({"a":5})", 0, &meta, "t"), Error);
}

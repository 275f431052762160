#include "ao/io/model_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "ao/core/error.h"
#include "ao/io/llama2c.h"

namespace ao::io {
namespace fs = std::filesystem;

namespace {

std::string find_tokenizer(const fs::path& dir, int vocab_size) {
  const std::vector<std::string> candidates = {
      "tokenizer.json", "tokenizer.model", "tok" + std::to_string(vocab_size) + ".bin", "tokenizer.bin"};
  for (const auto& c : candidates)
    if (fs::exists(dir / c)) return (dir / c).string();
  return "";
}

// "layers.2" before "layers.10": digit runs compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      const std::string x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i2, j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i, ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

void sort_tensors(std::vector<NamedTensor>& t) {
  std::stable_sort(t.begin(), t.end(), [](const auto& x, const auto& y) { return natural_less(x.name, y.name); });
}

}  // namespace

ModelFiles open_model_files(const std::string& path) {
  ModelFiles m;
  m.path = path;
  AO_CHECK(fs::exists(path), "{}: no such file or folder", path);
  if (fs::is_directory(path)) {
    m.format = "hf-folder";
    const fs::path cfg = fs::path(path) / "config.json";
    AO_CHECK(fs::exists(cfg), "{}: folder has no config.json (expected a Hugging Face model folder)", path);
    m.config = load_hf_config(cfg.string());
  } else if (path.ends_with(".safetensors")) {
    m.format = "safetensors";
    const fs::path cfg = fs::path(path).parent_path() / "config.json";
    if (fs::exists(cfg)) m.config = load_hf_config(cfg.string());
  } else {
    m.format = "llama2c";
    auto ck = load_llama2c(path);
    m.config = ck.config;
    m.tensors = std::move(ck.tensors);
    sort_tensors(m.tensors);
    m.file_bytes = static_cast<int64_t>(fs::file_size(path));
    m.tokenizer_path = find_tokenizer(fs::path(path).parent_path(), m.config->vocab_size);
    return m;
  }
  Checkpoint ck = Checkpoint::open(path);
  for (const auto& name : ck.names()) m.tensors.push_back({name, ck.tensor(name)});
  sort_tensors(m.tensors);
  for (const auto& f : ck.files()) {
    m.file_bytes += static_cast<int64_t>(f.file_size());
    for (const auto& [k, v] : f.metadata()) m.metadata.emplace(k, v);
  }
  const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  m.tokenizer_path = find_tokenizer(dir, m.config ? m.config->vocab_size : 0);
  return m;
}

}  // namespace ao::io

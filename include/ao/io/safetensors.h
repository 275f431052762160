// safetensors: read (mmap, zero-copy views, strict validation) and write (atomic).
// Format: u64 little-endian header length N, N bytes of JSON header, then the data region.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ao/core/mmap.h"
#include "ao/core/tensor.h"

namespace ao::io {

constexpr uint64_t kMaxSafetensorsHeader = 100u << 20;  // 100 MiB, as the reference library

struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data region
};

class SafetensorsFile {
 public:
  // Opens and validates the whole header; throws ao::Error naming the file and the problem.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& entries() const { return entries_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;  // throws if missing
  // Zero-copy CPU view into the mapping (kept alive by the returned tensor).
  Tensor tensor(const std::string& name) const;
  size_t file_size() const { return file_ ? file_->size() : 0; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;
  std::vector<TensorEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Validates a header + data region held in memory (used by open() and by the fuzzer).
// `data_size` is the number of bytes after the header.
std::vector<TensorEntry> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                  std::map<std::string, std::string>* metadata,
                                                  const std::string& context);

// Writes tensors (any device; copied to host) in the given order, atomically.
struct NamedTensor {
  std::string name;
  Tensor tensor;
};
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A HF checkpoint: one model.safetensors, a sharded set with model.safetensors.index.json,
// or a single .safetensors file. Tensor names map to the shard that holds them.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);  // a folder or a .safetensors file
  std::vector<std::string> names() const;            // sorted
  bool contains(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;
};

}  // namespace ao::io

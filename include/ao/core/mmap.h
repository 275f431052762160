// Read-only memory-mapped file. Shared so tensors can keep the mapping alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ao {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);  // throws ao::Error
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Writes a file atomically: content goes to "<path>.tmp.<pid>" which is renamed over
// `path` only after a successful flush. On error the temp file is removed.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();  // removes the temp file if commit() was not reached
  void write(const void* data, size_t bytes);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

std::string read_text_file(const std::string& path);  // throws ao::Error naming the path

}  // namespace ao

// GGUF reader (versions 2 and 3): header, metadata key/values of every type and tensor
// infos. Every count, length and offset is checked against the file before use; bad files
// give an ao::Error naming the file and the field. Tensor data stays in the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ao {

class MappedFile;

enum class GgufType : uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};
const char* gguf_type_name(GgufType t);

// One metadata value. Integers are widened to 64 bits, floats to double; arrays hold
// their elements (all of `array_type()`).
class GgufValue {
 public:
  using Array = std::vector<GgufValue>;
  GgufValue() = default;
  GgufValue(GgufType type, std::variant<uint64_t, int64_t, double, bool, std::string, Array> v,
            GgufType array_type = GgufType::uint8)
      : type_(type), array_type_(array_type), v_(std::move(v)) {}

  GgufType type() const { return type_; }
  GgufType array_type() const { return array_type_; }  // only meaningful for arrays
  bool is_integer() const;

  // Typed access; `key` is used in the error message when the type does not match.
  int64_t to_int(std::string_view key) const;    // any integer type that fits int64
  double to_double(std::string_view key) const;  // float or integer types
  bool to_bool(std::string_view key) const;
  const std::string& to_string(std::string_view key) const;
  const Array& to_array(std::string_view key) const;

 private:
  GgufType type_ = GgufType::uint8;
  GgufType array_type_ = GgufType::uint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> v_;
};

// ggml tensor element types known to the reader (block size and bytes per block).
struct GgmlTypeInfo {
  const char* name;
  uint32_t block_size;
  uint32_t type_size;  // bytes per block
};
// Returns nullptr for type ids that are unknown or were removed from ggml.
const GgmlTypeInfo* ggml_type_info(uint32_t type);

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> shape;  // ggml order: shape[0] is the contiguous dimension
  uint32_t type = 0;            // ggml type id
  uint64_t offset = 0;          // from the start of the data section
  uint64_t size = 0;            // bytes
  uint64_t elements() const;
};

class GgufFile {
 public:
  // Maps and parses a file.
  static GgufFile open(const std::string& path);
  // Parses an in-memory copy (tests, fuzzing). `name` is used in error messages. The
  // bytes must outlive tensor_data() calls.
  static GgufFile parse(const uint8_t* data, size_t size, const std::string& name);

  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return metadata_; }
  bool has(std::string_view key) const { return metadata_.find(key) != metadata_.end(); }
  const GgufValue* find(std::string_view key) const;
  const GgufValue& at(std::string_view key) const;  // throws ao::Error naming the file and key

  // Convenience accessors: typed value of a key, or the fallback when the key is absent.
  int64_t get_int(std::string_view key, int64_t fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key, const std::string& fallback) const;
  std::vector<std::string> get_string_array(std::string_view key) const;  // throws if absent
  std::vector<double> get_number_array(std::string_view key) const;       // throws if absent
  std::vector<int64_t> get_int_array(std::string_view key) const;         // throws if absent

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  const uint8_t* tensor_data(const GgufTensorInfo& t) const {
    return base_ + data_offset_ + t.offset;
  }

 private:
  std::shared_ptr<MappedFile> file_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensorInfo> tensors_;

  friend class GgufParser;
};

}  // namespace ao

#include "ao/io/gguf.h"

#include <cstring>
#include <limits>
#include <unordered_set>

#include "ao/core/error.h"
#include "ao/core/mmap.h"

namespace ao {

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::uint8:
      return "uint8";
    case GgufType::int8:
      return "int8";
    case GgufType::uint16:
      return "uint16";
    case GgufType::int16:
      return "int16";
    case GgufType::uint32:
      return "uint32";
    case GgufType::int32:
      return "int32";
    case GgufType::float32:
      return "float32";
    case GgufType::boolean:
      return "bool";
    case GgufType::string:
      return "string";
    case GgufType::array:
      return "array";
    case GgufType::uint64:
      return "uint64";
    case GgufType::int64:
      return "int64";
    case GgufType::float64:
      return "float64";
  }
  return "unknown";
}

// ---- values --------------------------------------------------------------------------

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufType::uint8:
    case GgufType::int8:
    case GgufType::uint16:
    case GgufType::int16:
    case GgufType::uint32:
    case GgufType::int32:
    case GgufType::uint64:
    case GgufType::int64:
      return true;
    default:
      return false;
  }
}

int64_t GgufValue::to_int(std::string_view key) const {
  if (const auto* u = std::get_if<uint64_t>(&v_)) {
    AO_CHECK(*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "metadata '{}': value {} is too large", key, *u);
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v_)) return *i;
  fail("metadata '{}': expected an integer, found {}", key, gguf_type_name(type_));
}

double GgufValue::to_double(std::string_view key) const {
  if (const auto* d = std::get_if<double>(&v_)) return *d;
  if (is_integer()) return static_cast<double>(to_int(key));
  fail("metadata '{}': expected a number, found {}", key, gguf_type_name(type_));
}

bool GgufValue::to_bool(std::string_view key) const {
  if (const auto* b = std::get_if<bool>(&v_)) return *b;
  fail("metadata '{}': expected a bool, found {}", key, gguf_type_name(type_));
}

const std::string& GgufValue::to_string(std::string_view key) const {
  if (const auto* s = std::get_if<std::string>(&v_)) return *s;
  fail("metadata '{}': expected a string, found {}", key, gguf_type_name(type_));
}

const GgufValue::Array& GgufValue::to_array(std::string_view key) const {
  if (const auto* a = std::get_if<Array>(&v_)) return *a;
  fail("metadata '{}': expected an array, found {}", key, gguf_type_name(type_));
}

// ---- ggml types ----------------------------------------------------------------------

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  static const GgmlTypeInfo table[] = {
      {"F32", 1, 4},        {"F16", 1, 2},       {"Q4_0", 32, 18},     {"Q4_1", 32, 20},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {"Q5_0", 32, 22},     {"Q5_1", 32, 24},
      {"Q8_0", 32, 34},     {"Q8_1", 32, 36},    {"Q2_K", 256, 84},    {"Q3_K", 256, 110},
      {"Q4_K", 256, 144},   {"Q5_K", 256, 176},  {"Q6_K", 256, 210},   {"Q8_K", 256, 292},
      {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
      {"IQ4_NL", 32, 18},   {"IQ3_S", 256, 110}, {"IQ2_S", 256, 82},   {"IQ4_XS", 256, 136},
      {"I8", 1, 1},         {"I16", 1, 2},       {"I32", 1, 4},        {"I64", 1, 8},
      {"F64", 1, 8},        {"IQ1_M", 256, 56},  {"BF16", 1, 2},       {nullptr, 0, 0},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {"TQ1_0", 256, 54},   {"TQ2_0", 256, 66},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {nullptr, 0, 0},      {"MXFP4", 32, 17},
  };
  if (type >= std::size(table) || table[type].name == nullptr) return nullptr;
  return &table[type];
}

uint64_t GgufTensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

// ---- parser --------------------------------------------------------------------------

class GgufParser {
 public:
  GgufParser(GgufFile& f) : f_(f), p_(f.base_), size_(f.size_) {}

  void parse() {
    AO_CHECK(size_ >= 4 && std::memcmp(p_, "GGUF", 4) == 0,
             "GGUF file '{}': bad magic (not a GGUF file)", f_.name_);
    pos_ = 4;
    f_.version_ = read_u32("version");
    if (f_.version_ == 1)
      throw NotSupported(
          fmt::format("GGUF file '{}': version 1 (convert it to version 3)", f_.name_));
    AO_CHECK(f_.version_ == 2 || f_.version_ == 3,
             "GGUF file '{}': unknown version {} (expected 2 or 3)", f_.name_, f_.version_);
    const uint64_t n_tensors = read_u64("tensor count");
    const uint64_t n_kv = read_u64("metadata count");
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info
    // at least 8 + 4 + 4 + 8 bytes.
    AO_CHECK(n_kv <= remaining() / 13, "GGUF file '{}': metadata count {} does not fit in {} bytes",
             f_.name_, n_kv, size_);
    AO_CHECK(n_tensors <= remaining() / 24,
             "GGUF file '{}': tensor count {} does not fit in {} bytes", f_.name_, n_tensors,
             size_);
    for (uint64_t i = 0; i < n_kv; ++i) {
      std::string key = read_string(fmt::format("key of metadata entry {}", i));
      AO_CHECK(!key.empty(), "GGUF file '{}': metadata entry {} has an empty key", f_.name_, i);
      const auto type = read_type(key);
      GgufValue v = read_value(type, key, 0);
      AO_CHECK(f_.metadata_.emplace(key, std::move(v)).second,
               "GGUF file '{}': duplicate metadata key '{}'", f_.name_, key);
    }
    if (const GgufValue* a = f_.find("general.alignment")) {
      const int64_t align = a->to_int("general.alignment");
      AO_CHECK(align > 0 && (align & (align - 1)) == 0 && align <= (1 << 20),
               "GGUF file '{}': general.alignment {} is not a power of two up to 1 MiB", f_.name_,
               align);
      f_.alignment_ = static_cast<uint64_t>(align);
    }
    std::unordered_set<std::string> names;
    f_.tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.name = read_string(fmt::format("name of tensor {}", i));
      const std::string what = fmt::format("tensor '{}'", t.name);
      AO_CHECK(names.insert(t.name).second, "GGUF file '{}': duplicate tensor name '{}'", f_.name_,
               t.name);
      const uint32_t n_dims = read_u32(what + " dimension count");
      AO_CHECK(n_dims >= 1 && n_dims <= 4, "GGUF file '{}': {} has {} dimensions, expected 1..4",
               f_.name_, what, n_dims);
      uint64_t elements = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t dim = read_u64(what + " shape");
        AO_CHECK(dim > 0 && dim <= (uint64_t{1} << 40) && elements <= (uint64_t{1} << 50) / dim,
                 "GGUF file '{}': {} has invalid dimension {} = {}", f_.name_, what, d, dim);
        elements *= dim;
        t.shape.push_back(dim);
      }
      t.type = read_u32(what + " type");
      const GgmlTypeInfo* info = ggml_type_info(t.type);
      if (!info)
        throw NotSupported(
            fmt::format("GGUF file '{}': {} has unknown ggml type {}", f_.name_, what, t.type));
      AO_CHECK(
          t.shape[0] % info->block_size == 0,
          "GGUF file '{}': {} of type {} has row length {}, not a multiple of the block size {}",
          f_.name_, what, info->name, t.shape[0], info->block_size);
      t.size = elements / info->block_size * info->type_size;
      t.offset = read_u64(what + " offset");
      AO_CHECK(t.offset % f_.alignment_ == 0,
               "GGUF file '{}': {} offset {} is not a multiple of the alignment {}", f_.name_, what,
               t.offset, f_.alignment_);
      f_.tensors_.push_back(std::move(t));
    }
    const uint64_t data = (pos_ + f_.alignment_ - 1) / f_.alignment_ * f_.alignment_;
    f_.data_offset_ = data;
    if (!f_.tensors_.empty())
      AO_CHECK(data <= size_,
               "GGUF file '{}': data section at offset {} is past the end of the file ({} bytes)",
               f_.name_, data, size_);
    const uint64_t data_bytes = data <= size_ ? size_ - data : 0;
    for (const GgufTensorInfo& t : f_.tensors_)
      AO_CHECK(t.offset <= data_bytes && t.size <= data_bytes - t.offset,
               "GGUF file '{}': tensor '{}' ({} bytes at data offset {}) extends past the end of "
               "the file "
               "(data section has {} bytes)",
               f_.name_, t.name, t.size, t.offset, data_bytes);
  }

 private:
  size_t remaining() const { return size_ - pos_; }

  void need(size_t n, const std::string& what) {
    AO_CHECK(n <= remaining(),
             "GGUF file '{}': truncated while reading {} (need {} bytes at offset {}, file has {})",
             f_.name_, what, n, pos_, size_);
  }
  template <class T>
  T read_pod(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  uint32_t read_u32(const std::string& what) { return read_pod<uint32_t>(what); }
  uint64_t read_u64(const std::string& what) { return read_pod<uint64_t>(what); }

  std::string read_string(const std::string& what) {
    const uint64_t len = read_u64(what + " length");
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

  GgufType read_type(const std::string& key) {
    const uint32_t t = read_u32(fmt::format("type of metadata '{}'", key));
    AO_CHECK(t <= static_cast<uint32_t>(GgufType::float64),
             "GGUF file '{}': metadata '{}' has unknown value type {}", f_.name_, key, t);
    return static_cast<GgufType>(t);
  }

  static size_t min_size(GgufType t) {
    switch (t) {
      case GgufType::uint8:
      case GgufType::int8:
      case GgufType::boolean:
        return 1;
      case GgufType::uint16:
      case GgufType::int16:
        return 2;
      case GgufType::uint32:
      case GgufType::int32:
      case GgufType::float32:
        return 4;
      case GgufType::string:
      case GgufType::uint64:
      case GgufType::int64:
      case GgufType::float64:
        return 8;
      case GgufType::array:
        return 12;
    }
    return 1;
  }

  GgufValue read_value(GgufType type, const std::string& key, int depth) {
    const std::string what = fmt::format("value of metadata '{}'", key);
    switch (type) {
      case GgufType::uint8:
        return {type, uint64_t{read_pod<uint8_t>(what)}};
      case GgufType::int8:
        return {type, int64_t{read_pod<int8_t>(what)}};
      case GgufType::uint16:
        return {type, uint64_t{read_pod<uint16_t>(what)}};
      case GgufType::int16:
        return {type, int64_t{read_pod<int16_t>(what)}};
      case GgufType::uint32:
        return {type, uint64_t{read_pod<uint32_t>(what)}};
      case GgufType::int32:
        return {type, int64_t{read_pod<int32_t>(what)}};
      case GgufType::uint64:
        return {type, uint64_t{read_pod<uint64_t>(what)}};
      case GgufType::int64:
        return {type, int64_t{read_pod<int64_t>(what)}};
      case GgufType::float32:
        return {type, double{read_pod<float>(what)}};
      case GgufType::float64:
        return {type, read_pod<double>(what)};
      case GgufType::boolean: {
        const uint8_t b = read_pod<uint8_t>(what);
        AO_CHECK(b <= 1, "GGUF file '{}': metadata '{}' is a bool with byte value {}", f_.name_,
                 key, b);
        return {type, b == 1};
      }
      case GgufType::string:
        return {type, read_string(what)};
      case GgufType::array: {
        AO_CHECK(depth < 4, "GGUF file '{}': metadata '{}' nests arrays more than 4 deep", f_.name_,
                 key);
        const GgufType elem = read_type(key);
        const uint64_t n = read_u64(fmt::format("element count of metadata '{}'", key));
        AO_CHECK(n <= remaining() / min_size(elem),
                 "GGUF file '{}': metadata '{}' claims {} elements of type {}, more than the {} "
                 "bytes left",
                 f_.name_, key, n, gguf_type_name(elem), remaining());
        GgufValue::Array items;
        items.reserve(n);
        for (uint64_t i = 0; i < n; ++i) items.push_back(read_value(elem, key, depth + 1));
        return {type, std::move(items), elem};
      }
    }
    fail("GGUF file '{}': metadata '{}' has unknown value type", f_.name_, key);
  }

  GgufFile& f_;
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.file_ = MappedFile::open(path);
  f.base_ = f.file_->data();
  f.size_ = f.file_->size();
  f.name_ = path;
  GgufParser(f).parse();
  return f;
}

GgufFile GgufFile::parse(const uint8_t* data, size_t size, const std::string& name) {
  GgufFile f;
  f.base_ = data;
  f.size_ = size;
  f.name_ = name;
  GgufParser(f).parse();
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::at(std::string_view key) const {
  const GgufValue* v = find(key);
  AO_CHECK(v != nullptr, "GGUF file '{}': missing metadata key '{}'", name_, key);
  return *v;
}

namespace {
// Re-throws a value access error with the file name in front.
template <class F>
auto with_file(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const NotSupported&) {
    throw;
  } catch (const Error& e) {
    fail("GGUF file '{}': {}", name, e.what());
  }
}
}  // namespace

int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? with_file(name_, [&] { return v->to_int(key); }) : fallback;
}

bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  return v ? with_file(name_, [&] { return v->to_bool(key); }) : fallback;
}

std::string GgufFile::get_string(std::string_view key, const std::string& fallback) const {
  const GgufValue* v = find(key);
  return v ? with_file(name_, [&] { return v->to_string(key); }) : fallback;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = at(key);
  return with_file(name_, [&] {
    std::vector<std::string> out;
    for (const GgufValue& e : v.to_array(key)) out.push_back(e.to_string(key));
    return out;
  });
}

std::vector<double> GgufFile::get_number_array(std::string_view key) const {
  const GgufValue& v = at(key);
  return with_file(name_, [&] {
    std::vector<double> out;
    for (const GgufValue& e : v.to_array(key)) out.push_back(e.to_double(key));
    return out;
  });
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& v = at(key);
  return with_file(name_, [&] {
    std::vector<int64_t> out;
    for (const GgufValue& e : v.to_array(key)) out.push_back(e.to_int(key));
    return out;
  });
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const GgufTensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace ao

#include "ao/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "ao/core/error.h"

namespace ao::io {
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<TensorEntry> parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                                  std::map<std::string, std::string>* metadata,
                                                  const std::string& context) {
  json h;
  try {
    h = json::parse(header_json);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", context, e.what());
  }
  AO_CHECK(h.is_object(), "{}: header must be a JSON object", context);
  std::vector<TensorEntry> entries;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      AO_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings", context);
      for (auto m = v.begin(); m != v.end(); ++m) {
        AO_CHECK(m.value().is_string(), "{}: __metadata__['{}'] must be a string", context, m.key());
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    AO_CHECK(v.is_object(), "{}: tensor '{}': entry must be an object", context, name);
    AO_CHECK(v.contains("dtype") && v["dtype"].is_string(), "{}: tensor '{}': missing string field 'dtype'",
             context, name);
    AO_CHECK(v.contains("shape") && v["shape"].is_array(), "{}: tensor '{}': missing array field 'shape'",
             context, name);
    AO_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
             "{}: tensor '{}': 'data_offsets' must be an array [begin, end]", context, name);
    TensorEntry e;
    e.name = name;
    const std::string dt = v["dtype"].get<std::string>();
    try {
      e.dtype = dtype_from_safetensors(dt);
    } catch (const Error&) {
      fail("{}: tensor '{}': unknown dtype '{}'", context, name, dt);
    }
    AO_CHECK(v["shape"].size() <= 16, "{}: tensor '{}': {} dimensions is too many", context, name,
             v["shape"].size());
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      AO_CHECK(d.is_number_unsigned(), "{}: tensor '{}': shape entries must be non-negative integers",
               context, name);
      const uint64_t dim = d.get<uint64_t>();
      AO_CHECK(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
               "{}: tensor '{}': dimension {} too large", context, name, dim);
      AO_CHECK(dim == 0 || numel <= (uint64_t{1} << 62) / dim, "{}: tensor '{}': shape too large", context,
               name);
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : v["data_offsets"])
      AO_CHECK(o.is_number_unsigned(), "{}: tensor '{}': data_offsets must be non-negative integers",
               context, name);
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    AO_CHECK(e.begin <= e.end, "{}: tensor '{}': data_offsets [{}, {}] are reversed", context, name,
             e.begin, e.end);
    AO_CHECK(e.end <= data_size,
             "{}: tensor '{}': data_offsets [{}, {}] run past the end of the data ({} bytes)", context,
             name, e.begin, e.end, data_size);
    const uint64_t expect = dtype_storage_bytes(e.dtype, static_cast<int64_t>(numel));
    AO_CHECK(e.end - e.begin == expect,
             "{}: tensor '{}': {} with shape {} needs {} bytes but data_offsets span {}", context, name,
             dt, shape_str(e.shape), expect, e.end - e.begin);
    entries.push_back(std::move(e));
  }
  // Tensors must tile the data region: sorted by offset, each starts where the previous ended.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const TensorEntry* prev = nullptr;
  for (const auto* e : by_offset) {
    if (e->begin < pos)
      fail("{}: tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{})", context, e->name,
           e->begin, e->end, prev->name, prev->begin, prev->end);
    if (e->begin > pos)
      fail("{}: tensor '{}' starts at byte {} but the previous tensor ends at {} (gap in data)", context,
           e->name, e->begin, pos);
    pos = e->end;
    prev = e;
  }
  AO_CHECK(pos == data_size, "{}: tensors cover {} bytes but the data region holds {} bytes", context,
           pos, data_size);
  return entries;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  const size_t size = f.file_->size();
  AO_CHECK(size >= 8, "{}: file is {} bytes, too short for a safetensors header", path, size);
  uint64_t n = 0;
  std::memcpy(&n, f.file_->data(), 8);  // little-endian host assumed (x86-64, aarch64)
  AO_CHECK(n <= kMaxSafetensorsHeader, "{}: header length {} exceeds the {} byte limit", path, n,
           kMaxSafetensorsHeader);
  AO_CHECK(n <= size - 8, "{}: header length {} runs past the end of the {} byte file (truncated?)",
           path, n, size);
  f.data_start_ = 8 + n;
  std::string_view header(reinterpret_cast<const char*>(f.file_->data() + 8), n);
  f.entries_ = parse_safetensors_header(header, size - f.data_start_, &f.metadata_, path);
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  AO_CHECK(it != index_.end(), "{}: no tensor named '{}'", path_, name);
  return entries_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  auto* p = const_cast<uint8_t*>(file_->data() + data_start_ + e.begin);
  return Tensor::from_blob(p, e.shape, e.dtype, file_);
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<Tensor> host;
  uint64_t offset = 0;
  std::map<std::string, int> seen;
  for (const auto& nt : tensors) {
    AO_CHECK(nt.tensor.defined(), "{}: tensor '{}' is undefined", path, nt.name);
    AO_CHECK(!nt.name.empty() && nt.name != "__metadata__", "{}: bad tensor name '{}'", path, nt.name);
    AO_CHECK(seen[nt.name]++ == 0, "{}: tensor name '{}' appears twice", path, nt.name);
    const char* st = dtype_info(nt.tensor.dtype()).safetensors_name;
    AO_CHECK(st != nullptr, "{}: tensor '{}': dtype {} has no safetensors name (store packed data as U8)",
             path, nt.name, dtype_name(nt.tensor.dtype()));
    Tensor t = nt.tensor.to(Device::cpu()).contiguous();
    const uint64_t bytes = t.nbytes();
    h[nt.name] = {{"dtype", st}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(std::move(t));
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data region to 8 bytes
  const uint64_t n = header.size();
  AtomicFileWriter w(path);
  w.write(&n, 8);
  w.write(header.data(), header.size());
  for (const auto& t : host) w.write(t.data_ptr(), t.nbytes());
  w.commit();
}

// ---- sharded checkpoints ----------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    const fs::path index = fs::path(path) / "model.safetensors.index.json";
    if (fs::exists(index)) {
      json j;
      try {
        j = json::parse(read_text_file(index.string()));
      } catch (const json::exception& e) {
        fail("{}: not valid JSON: {}", index.string(), e.what());
      }
      AO_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
               "{}: missing object 'weight_map'", index.string());
      std::map<std::string, size_t> file_idx;
      std::vector<std::pair<std::string, std::string>> names;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        AO_CHECK(it.value().is_string(), "{}: weight_map['{}'] must be a file name", index.string(), it.key());
        const std::string shard = it.value().get<std::string>();
        AO_CHECK(shard.find('/') == std::string::npos && shard.find("..") == std::string::npos,
                 "{}: weight_map['{}'] names '{}', which is not a plain file name", index.string(),
                 it.key(), shard);
        if (!file_idx.count(shard)) {
          file_idx[shard] = c.files_.size();
          c.files_.push_back(SafetensorsFile::open((fs::path(path) / shard).string()));
        }
        names.emplace_back(it.key(), shard);
      }
      for (const auto& [name, shard] : names) {
        const auto& f = c.files_[file_idx[shard]];
        AO_CHECK(f.contains(name), "{}: index maps '{}' to {} but that file has no such tensor",
                 index.string(), name, shard);
        c.where_[name] = file_idx[shard];
      }
      return c;
    }
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    AO_CHECK(!files.empty(), "{}: no model.safetensors, index or *.safetensors file in this folder", path);
  } else {
    AO_CHECK(fs::exists(path), "{}: no such file or folder", path);
    files.push_back(path);
  }
  for (const auto& f : files) {
    c.files_.push_back(SafetensorsFile::open(f));
    for (const auto& e : c.files_.back().entries()) {
      AO_CHECK(!c.where_.count(e.name), "{}: tensor '{}' appears in more than one file", path, e.name);
      c.where_[e.name] = c.files_.size() - 1;
    }
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return where_.count(name) != 0; }

const TensorEntry& Checkpoint::entry(const std::string& name) const {
  auto it = where_.find(name);
  AO_CHECK(it != where_.end(), "checkpoint has no tensor named '{}'", name);
  return files_[it->second].entry(name);
}

Tensor Checkpoint::tensor(const std::string& name) const {
  auto it = where_.find(name);
  AO_CHECK(it != where_.end(), "checkpoint has no tensor named '{}'", name);
  return files_[it->second].tensor(name);
}

}  // namespace ao::io

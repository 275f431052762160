// Test helpers: load TorchAO golden fixtures (tests/fixtures/formats/*.safetensors) and
// compare buffers byte for byte with a readable first-mismatch message.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ao/io/safetensors.h"

namespace ao::formats::testing {

class Fixture {
 public:
  explicit Fixture(const std::string& file)
      : f_(io::SafetensorsFile::open(std::string(AO_SOURCE_DIR) + "/tests/fixtures/formats/" +
                                     file)) {
    cases_ = nlohmann::json::parse(f_.metadata().at("cases"));
  }
  const nlohmann::json& cases() const { return cases_; }
  bool has(const std::string& name) const { return f_.contains(name); }
  template <typename T>
  std::vector<T> get(const std::string& name) const {
    Tensor t = f_.tensor(name);
    std::vector<T> v(t.nbytes() / sizeof(T));
    std::memcpy(v.data(), t.data_ptr(), v.size() * sizeof(T));
    return v;
  }
  std::vector<uint8_t> bytes(const std::string& name) const { return get<uint8_t>(name); }
  Shape shape(const std::string& name) const { return f_.entry(name).shape; }
  DType dtype(const std::string& name) const { return f_.entry(name).dtype; }

 private:
  io::SafetensorsFile f_;
  nlohmann::json cases_;
};

// Byte equality with the first differing element reported (elem_size bytes per element).
inline ::testing::AssertionResult same_bytes(const void* a, const void* b, size_t nbytes,
                                             size_t elem_size = 1) {
  const auto* pa = static_cast<const uint8_t*>(a);
  const auto* pb = static_cast<const uint8_t*>(b);
  size_t bad = 0, first = SIZE_MAX;
  for (size_t i = 0; i < nbytes; i += elem_size)
    if (std::memcmp(pa + i, pb + i, elem_size) != 0) {
      if (first == SIZE_MAX) first = i / elem_size;
      ++bad;
    }
  if (bad == 0) return ::testing::AssertionSuccess();
  auto hex = [&](const uint8_t* p) {
    std::string s;
    for (size_t k = elem_size; k-- > 0;) s += fmt::format("{:02x}", p[first * elem_size + k]);
    return s;
  };
  return ::testing::AssertionFailure()
         << bad << " of " << nbytes / elem_size << " elements differ; first at " << first
         << ": ours 0x" << hex(pa) << " vs reference 0x" << hex(pb);
}

template <typename T>
::testing::AssertionResult same_vec(const std::vector<T>& ours, const std::vector<T>& ref) {
  if (ours.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << ours.size() << " vs " << ref.size();
  return same_bytes(ours.data(), ref.data(), ours.size() * sizeof(T), sizeof(T));
}

}  // namespace ao::formats::testing

// libFuzzer target: the safetensors header parser on arbitrary bytes (u64 length + header +
// data). Any input must either parse or throw ao::Error — never crash, leak or overflow.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "ao/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > size - 8) return 0;
  std::string_view header(reinterpret_cast<const char*>(data + 8), n);
  try {
    std::map<std::string, std::string> meta;
    auto entries = ao::io::parse_safetensors_header(header, size - 8 - n, &meta, "fuzz");
    for (const auto& e : entries)
      if (e.end > size - 8 - n) __builtin_trap();  // validation let an out-of-range tensor through
  } catch (const ao::Error&) {
  }
  return 0;
}

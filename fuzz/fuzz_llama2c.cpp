// libFuzzer target: the llama2.c checkpoint parser on arbitrary bytes. Every tensor view it
// returns must lie inside the input.
#include <cstdint>
#include <memory>

#include "ao/io/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto ck = ao::io::parse_llama2c(data, size, nullptr, "fuzz");
    for (const auto& t : ck.tensors) {
      const auto* p = static_cast<const uint8_t*>(t.tensor.data_ptr());
      if (p < data || p + t.tensor.nbytes() > data + size) __builtin_trap();
    }
  } catch (const ao::Error&) {
  }
  return 0;
}

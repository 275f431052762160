// libFuzzer target: the GGUF reader must answer any bytes with a parsed file or an
// ao::Error, never a crash, a hang or an out-of-bounds read.
#include <cstddef>
#include <cstdint>

#include "ao/core/error.h"
#include "ao/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const ao::GgufFile f = ao::GgufFile::parse(data, size, "fuzz.gguf");
    for (const auto& [key, value] : f.metadata()) {
      if (value.is_integer()) (void)value.to_int(key);
      if (value.type() == ao::GgufType::array) (void)value.to_array(key).size();
    }
    for (const ao::GgufTensorInfo& t : f.tensors()) {
      // Touch the first and last byte of every tensor: must lie inside the input.
      if (t.size > 0) {
        volatile uint8_t first = f.tensor_data(t)[0];
        volatile uint8_t last = f.tensor_data(t)[t.size - 1];
        (void)first;
        (void)last;
      }
    }
  } catch (const ao::Error&) {
  }
  return 0;
}

#include "ao/formats/block_formats.h"

#include <iterator>

#include "ao/core/error.h"

namespace ao::formats {
namespace {

template <FloatFormat E>
void mx_q(const void* x, DType xd, int64_t n, int64_t k, uint8_t* q, uint8_t* s,
          const BlockQuantOptions& o) {
  mx_quantize(x, xd, n, k, E, o.mode, q, s);
}
template <FloatFormat E>
void mx_dq(const uint8_t* q, const uint8_t* s, int64_t n, int64_t k, void* out, DType od,
           const BlockQuantOptions&) {
  mx_dequantize(q, s, n, k, E, out, od);
}
void nv_q(const void* x, DType xd, int64_t n, int64_t k, uint8_t* q, uint8_t* s,
          const BlockQuantOptions& o) {
  nvfp4_quantize(x, xd, n, k, o.per_tensor_scale, q, s);
}
void nv_dq(const uint8_t* q, const uint8_t* s, int64_t n, int64_t k, void* out, DType od,
           const BlockQuantOptions& o) {
  nvfp4_dequantize(q, s, n, k, o.per_tensor_scale, out, od);
}

template <FloatFormat E>
constexpr BlockFormatInfo mx_row(BlockFormat f, const char* name, int storage_bits) {
  return {f, name, kMxBlockSize, E, storage_bits, FloatFormat::e8m0, mx_q<E>, mx_dq<E>};
}

constexpr BlockFormatInfo kBlockFormats[] = {
    mx_row<FloatFormat::f8_e4m3fn>(BlockFormat::mxfp8_e4m3, "mxfp8_e4m3", 8),
    mx_row<FloatFormat::f8_e5m2>(BlockFormat::mxfp8_e5m2, "mxfp8_e5m2", 8),
    mx_row<FloatFormat::f6_e2m3>(BlockFormat::mxfp6_e2m3, "mxfp6_e2m3", 8),
    mx_row<FloatFormat::f6_e3m2>(BlockFormat::mxfp6_e3m2, "mxfp6_e3m2", 8),
    mx_row<FloatFormat::f4_e2m1>(BlockFormat::mxfp4, "mxfp4", 4),
    {BlockFormat::nvfp4, "nvfp4", kNvfp4BlockSize, FloatFormat::f4_e2m1, 4, FloatFormat::f8_e4m3fn,
     nv_q, nv_dq},
};
static_assert(std::size(kBlockFormats) == static_cast<size_t>(BlockFormat::count_));

}  // namespace

const BlockFormatInfo& block_format_info(BlockFormat f) {
  const auto i = static_cast<size_t>(f);
  AO_CHECK(i < std::size(kBlockFormats), "formats: invalid BlockFormat value {}", i);
  return kBlockFormats[i];
}

BlockFormat block_format_from_name(std::string_view name) {
  for (const auto& r : kBlockFormats)
    if (name == r.name) return r.format;
  fail(
      "formats: unknown block format '{}' (expected mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, "
      "mxfp6_e3m2, mxfp4 or nvfp4)",
      name);
}

}  // namespace ao::formats

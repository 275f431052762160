// The traits table of block-scaled formats (ggml's type_traits idea): one row per format
// with its block size, element and scale formats and its quantize/dequantize functions, so
// generic code (quantized tensor types, benchmarks, tests) loops over rows instead of
// switching on formats. Adding a block format = adding a row in block_formats.cpp.
//
// Layouts are those of ao/formats/mx.h: qdata [N, K] codes one per byte (fp8, fp6) or
// [N, K/2] packed fp4 pairs; scale [N, K/block] row-major (not swizzled).
#pragma once

#include <cstdint>
#include <string_view>

#include "ao/core/dtype.h"
#include "ao/formats/float_formats.h"
#include "ao/formats/mx.h"

namespace ao::formats {

enum class BlockFormat : uint8_t {
  mxfp8_e4m3,
  mxfp8_e5m2,
  mxfp6_e2m3,
  mxfp6_e3m2,
  mxfp4,
  nvfp4,
  count_
};

// Per-call options: MX scale mode (TorchAO's MXDynamicActivationMXWeightConfig default is
// RCEIL; MXTensor's own default FLOOR), NVFP4 optional per-tensor scale.
struct BlockQuantOptions {
  ScaleMode mode = ScaleMode::rceil;
  const float* per_tensor_scale = nullptr;
};

using BlockQuantizeFn = void (*)(const void* x, DType x_dtype, int64_t n, int64_t k, uint8_t* qdata,
                                 uint8_t* scale, const BlockQuantOptions& opt);
using BlockDequantizeFn = void (*)(const uint8_t* qdata, const uint8_t* scale, int64_t n, int64_t k,
                                   void* out, DType out_dtype, const BlockQuantOptions& opt);

struct BlockFormatInfo {
  BlockFormat format;
  const char* name;          // "mxfp8_e4m3", ..., "nvfp4" (TorchAO / CLI spelling)
  int64_t block_size;        // elements per scale along K
  FloatFormat element;       // element format
  int storage_bits;          // bits per element in qdata (8, or 4 for packed fp4)
  FloatFormat scale_format;  // e8m0 (MX) or f8_e4m3fn (NVFP4)
  BlockQuantizeFn quantize;  // validates arguments, throws ao::Error
  BlockDequantizeFn dequantize;
};

const BlockFormatInfo& block_format_info(BlockFormat f);
BlockFormat block_format_from_name(std::string_view name);  // throws ao::Error if unknown

// Buffer sizes for an [n, k] input.
inline int64_t block_qdata_bytes(const BlockFormatInfo& f, int64_t n, int64_t k) {
  return n * k * f.storage_bits / 8;
}
inline int64_t block_scale_count(const BlockFormatInfo& f, int64_t n, int64_t k) {
  return n * (k / f.block_size);
}

}  // namespace ao::formats

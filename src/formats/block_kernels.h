// Private: row kernels shared by MX and NVFP4 quantization. For each block of a row:
// amax (NaN-propagating) -> scale byte + how to scale the elements -> saturating encode.
// The scalar reference and the fused AVX2 version (block_kernels_avx2.cpp) are
// bit-identical.
#pragma once

#include <cstdint>

#include "ao/formats/mx.h"
#include "formats/float_codec.h"

namespace ao::formats::detail {

// How a block's elements are scaled before encoding: x / value or x * value.
struct BlockScaling {
  uint8_t scale_byte;
  bool divide;
  float value;
};

// The per-block rule: MX (E8M0 scale for a given mode) or NVFP4 (e4m3 scale, optional
// per-tensor scale).
struct BlockRule {
  enum Kind : uint8_t { mx, nvfp4 } kind;
  FloatFormat elem;
  ScaleMode mode;                 // MX only
  const float* per_tensor_scale;  // NVFP4 only, may be null
};

BlockScaling block_scaling(const BlockRule& rule, float amax);

// Quantizes row[0..k) in blocks of `bs` into one code per byte (codes[0..k)) and one scale
// byte per block.
void quantize_blocks_row_ref(const BlockRule& rule, const float* row, int64_t k, int64_t bs,
                             uint8_t* codes, uint8_t* scales);
void quantize_blocks_row_avx2(const BlockRule& rule, const float* row, int64_t k, int64_t bs,
                              uint8_t* codes, uint8_t* scales);

}  // namespace ao::formats::detail

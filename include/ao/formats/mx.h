// Block-scaled formats bit-exact with TorchAO 0.18 (torchao/prototype/mx_formats):
//  - MX (OCP Microscaling): blocks of 32 along K, one E8M0 scale byte per block, elements
//    fp8 e4m3fn / e5m2, fp6 e2m3 / e3m2 or fp4 e2m1; scale modes FLOOR, CEIL, EVEN, RCEIL
//    (mx_tensor.to_mx / _to_mx_rceil, and to_dtype for dequantization).
//  - NVFP4: blocks of 16, fp4 e2m1 elements, e4m3fn block scales, optional f32 per-tensor
//    scale (nvfp4_tensor.nvfp4_quantize).
//  - The cuBLAS "blocked" scale layout (128 x 4 tiles) TorchAO swizzles scales into
//    (utils.to_blocked / from_blocked).
//
// Layouts (x is row-major [N, K], f32 or bf16; K must be a multiple of the block size):
//  - qdata: fp8 and fp6 one code per byte [N, K] (fp6 in bits 0-5, as MXTensor keeps it);
//    fp4 packed two per byte [N, K/2], element 2i in the LOW nibble (torch.float4_e2m1fn_x2).
//  - MX scale: e8m0 bytes [N, K/32] row-major (MXTensor.scale, before swizzling).
//  - NVFP4 scale: e4m3fn bytes [N, K/16] row-major (NVFP4Tensor.scale, before swizzling).
#pragma once

#include <cstdint>

#include "ao/core/dtype.h"
#include "ao/formats/float_formats.h"

namespace ao::formats {

enum class ScaleMode : uint8_t { floor, ceil, even, rceil };
const char* scale_mode_name(ScaleMode m);  // "FLOOR", "CEIL", "EVEN", "RCEIL"

constexpr int64_t kMxBlockSize = 32;
constexpr int64_t kNvfp4BlockSize = 16;

// The E8M0 scale byte TorchAO picks for a block with absolute maximum `amax` (f32).
uint8_t mx_scale_from_amax(float amax, FloatFormat elem, ScaleMode mode);

// Bytes of qdata for an [n, k] tensor of the given element format.
int64_t mx_qdata_bytes(FloatFormat elem, int64_t n, int64_t k);

void mx_quantize(const void* x, DType x_dtype, int64_t n, int64_t k, FloatFormat elem,
                 ScaleMode mode, uint8_t* qdata, uint8_t* scale, int64_t block_size = kMxBlockSize);
// out = element * 2^(scale - 127) (scale 255 -> NaN), written as out_dtype (f32 or bf16).
void mx_dequantize(const uint8_t* qdata, const uint8_t* scale, int64_t n, int64_t k,
                   FloatFormat elem, void* out, DType out_dtype, int64_t block_size = kMxBlockSize);

// NVFP4 per-tensor scale from the tensor's amax: amax / (448 * 6).
float nvfp4_per_tensor_scale(float amax);
// per_tensor_scale may be null (single-level scaling).
void nvfp4_quantize(const void* x, DType x_dtype, int64_t n, int64_t k,
                    const float* per_tensor_scale, uint8_t* qdata, uint8_t* scale);
// out = fp4 * (per_tensor_scale * e4m3 scale), f32 math, written as out_dtype.
void nvfp4_dequantize(const uint8_t* qdata, const uint8_t* scale, int64_t n, int64_t k,
                      const float* per_tensor_scale, void* out, DType out_dtype);

// ---- cuBLAS blocked scale layout (TorchAO to_blocked / from_blocked) ----------------------
// A [rows, cols] byte matrix is zero-padded to [ceil(rows/128)*128, ceil(cols/4)*4] and
// rearranged tile by tile (128 x 4 tiles, row-major over tiles); inside a tile, byte
// (r, c) goes to offset (r % 32) * 16 + (r / 32) * 4 + c.
int64_t blocked_scale_bytes(int64_t rows, int64_t cols);
void to_blocked(const uint8_t* scale, int64_t rows, int64_t cols, uint8_t* blocked);
void from_blocked(const uint8_t* blocked, int64_t rows, int64_t cols, uint8_t* scale);

}  // namespace ao::formats

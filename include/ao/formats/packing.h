// Bit packing of sub-byte codes, in the byte orders TorchAO / PyTorch use. Inputs and
// outputs are flat row-major buffers; a 2-D [N, K] tensor packs along K row by row, which
// for these layouts equals packing the flat buffer (K must be a multiple of the group).
//
//  - Nibbles, low first: byte i = v[2i] | v[2i+1] << 4. Plain Int4Tensor qdata (mslk
//    pack_int4, int4 in [-8, 7] two's complement), torch.float4_e2m1fn_x2 (MX / NVFP4 fp4),
//    TorchAO pack_uint4.
//  - Nibbles, high first: byte i = v[2i] << 4 | v[2i+1]. The tinygemm pre-pack byte fed to
//    aten._convert_weight_to_int4pack (Int4TilePackedTo4dTensor); the 4-d tile shuffle
//    itself is a kernel-layout concern of the quant layer.
//  - fp6, 4 values in 3 bytes, most significant bits first:
//    [a5..a0 b5 b4] [b3..b0 c5..c2] [c1 c0 d5..d0]. TorchAO 0.18's MXTensor keeps fp6 one
//    code per byte (no packing); this is the dense layout of our f6_*x4 dtypes.
//  - uintx (TorchAO prototype/dtypes/uintx/bitpacking.pack_cpu, N in 1..7): planar shards
//    per row: N is split into 4/2/1-bit pieces (e.g. 6 = 4 + 2); for each piece of b bits
//    a shard of K*b/8 bytes per row, where byte kk ORs element j*(K*b/8) + kk shifted to
//    bit position j*b (j < 8/b). Shards are written one after another, each [N, K*b/8].
//    K must be a multiple of 8.
#pragma once

#include <cstdint>

namespace ao::formats {

void pack_nibbles_low_first(const uint8_t* v, int64_t n, uint8_t* packed);    // n even
void unpack_nibbles_low_first(const uint8_t* packed, int64_t n, uint8_t* v);  // v in [0, 15]
void unpack_int4_low_first(const uint8_t* packed, int64_t n, int8_t* v);      // v in [-8, 7]
void pack_nibbles_high_first(const uint8_t* v, int64_t n, uint8_t* packed);
void unpack_nibbles_high_first(const uint8_t* packed, int64_t n, uint8_t* v);

inline void pack_fp4(const uint8_t* codes, int64_t n, uint8_t* packed) {
  pack_nibbles_low_first(codes, n, packed);
}
inline void unpack_fp4(const uint8_t* packed, int64_t n, uint8_t* codes) {
  unpack_nibbles_low_first(packed, n, codes);
}

int64_t fp6_packed_bytes(int64_t n);                              // 3 * n / 4, n % 4 == 0
void pack_fp6(const uint8_t* codes, int64_t n, uint8_t* packed);  // codes in bits 0-5
void unpack_fp6(const uint8_t* packed, int64_t n, uint8_t* codes);

int64_t uintx_packed_bytes(int bits, int64_t rows, int64_t cols);  // rows * cols * bits / 8
void pack_uintx(const uint8_t* v, int bits, int64_t rows, int64_t cols, uint8_t* packed);
void unpack_uintx(const uint8_t* packed, int bits, int64_t rows, int64_t cols, uint8_t* v);

}  // namespace ao::formats

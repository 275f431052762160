// Weight layouts of PyTorch's "tinygemm" int4 kernels, as pure functions on raw buffers:
//
//  1. CUDA tile layout: aten._convert_weight_to_int4pack(packed_u8 [N, K/2], inner_k_tiles)
//     (aten/src/ATen/native/cuda/int4mm.cu, matrix_to_m16n8k16_Bint4_layout), the `qdata` of
//     TorchAO's Int4TilePackedTo4dTensor (which uses inner_k_tiles = 8). Output is int32
//     [N/8, K/(inner_k_tiles*16), 32, inner_k_tiles/2]: for n-tile nt (8 rows), k super-tile
//     ko (inner_k_tiles*16 columns), lane t (0..31) and word w (0..inner_k_tiles/2-1), with
//     n = nt*8 + t/4, k0 = (ko*inner_k_tiles + 2*w) * 16 + 2*(t%4), the 8 nibbles of the word,
//     lowest first, are
//         q[n][k0], q[n][k0+8], q[n][k0+16], q[n][k0+24],
//         q[n][k0+1], q[n][k0+9], q[n][k0+17], q[n][k0+25]
//     (each lane holds the m16n8k16 B-fragment values of two consecutive k-tiles).
//     `q` is uint4 codes, one per byte, values 0..15, row-major [N, K] (what
//     quantize_affine_tinygemm / hqq_quantize_int4 produce; no pre-pack byte needed).
//
//  2. scale_and_zero of Int4TilePackedTo4dTensor (TorchAO pack_tinygemm_scales_and_zeros):
//     scale and zero [N, K/g] row-major (one per group) interleaved into [K/g, N, 2]:
//     out[(gi * N + n) * 2 + 0] = scale[n][gi], out[... + 1] = zero[n][gi]. Stored in the
//     weight dtype (bf16 for Int4TilePackedTo4dTensor). Dequantization is
//     (q - 8) * scale + zero.
//
//  3. CPU layout: aten._convert_weight_to_int4pack_for_cpu(q_i32 [N, K], inner_k_tiles)
//     (aten/src/ATen/native/cpu/int4mm_kernel.cpp weight_to_int4pack_kernel), uint8 [N, K/2].
//     Its byte order depends on the ISA torch was dispatched to (an "opaque" layout, not for
//     checkpoints): rows are taken in blocks of BLOCK_N (64 on AVX512, 32 on AVX2 and the
//     scalar build); block b occupies bytes [b*BLOCK_N*K/2, ...), and within it, for every
//     column k, BLOCK_N/2 bytes:
//       avx512, full block of 64:  byte d (d<16)    = q[d+32][k] << 4 | q[d][k]
//                                  byte 16+d (d<16) = q[d+48][k] << 4 | q[d+16][k]
//       avx2, full block of 32:    byte d (d<16)    = q[d+16][k] << 4 | q[d][k]
//       otherwise (scalar build, or a last block of nb < BLOCK_N rows):
//                                  byte i (i<nb/2)  = q[2i+1][k] << 4 | q[2i][k]
//     where q[r][k] is row b*BLOCK_N + r. inner_k_tiles is not used by the CPU op.
//
// Bad shapes throw ao::Error: N a multiple of 8 (tile) / 16 (CPU), K a multiple of
// inner_k_tiles * 16 (tile) / 2 (CPU), inner_k_tiles in {2, 4, 8}, group size dividing K.
#pragma once

#include <array>
#include <cstdint>

namespace ao::formats {

// ---- CUDA tile layout (Int4TilePackedTo4dTensor.qdata) ------------------------------------
// Validates N, K, inner_k_tiles; returns the 4-d shape [N/8, K/(ikt*16), 32, ikt/2].
std::array<int64_t, 4> int4_tile_packed_shape(int64_t n, int64_t k, int inner_k_tiles);
// q: [N, K] uint4 codes (0..15, one per byte; only the low nibble is used).
// packed: N*K/8 int32 values in the layout above.
void int4_tile_pack(const uint8_t* q, int64_t n, int64_t k, int inner_k_tiles, int32_t* packed);
void int4_tile_unpack(const int32_t* packed, int64_t n, int64_t k, int inner_k_tiles, uint8_t* q);

// ---- scale_and_zero (pack_tinygemm_scales_and_zeros) -----------------------------------------
// scale, zero: [N, K/g] row-major; out: [K/g, N, 2]. `groups` = K/g. The bf16 overload
// rounds each value to bf16 (RNE; exact for values that already are bf16).
void interleave_scale_and_zero(const float* scale, const float* zero, int64_t n, int64_t groups,
                               float* out);
void interleave_scale_and_zero_bf16(const float* scale, const float* zero, int64_t n,
                                    int64_t groups, uint16_t* out);
// Inverse: [K/g, N, 2] -> scale, zero [N, K/g].
void deinterleave_scale_and_zero(const float* in, int64_t n, int64_t groups, float* scale,
                                 float* zero);
void deinterleave_scale_and_zero_bf16(const uint16_t* in, int64_t n, int64_t groups, float* scale,
                                      float* zero);
// Number of groups K/g with the checks TorchAO/tinygemm apply (g divides K; g >= 2).
int64_t tinygemm_groups(int64_t k, int64_t group_size);

// ---- CPU layout (_convert_weight_to_int4pack_for_cpu) ---------------------------------------
enum class Int4CpuPackIsa : uint8_t { avx512, avx2, scalar };
// Which layout PyTorch would produce on this machine (avx512 if the CPU has AVX512F/BW/VL/DQ,
// else avx2 if it has AVX2+FMA, else scalar) — PyTorch's default dispatch; ATEN_CPU_CAPABILITY
// can override it there.
Int4CpuPackIsa int4_cpu_pack_isa_native();
// q: [N, K] codes 0..15 (PyTorch takes them as int32; here one per byte); packed: N*K/2 bytes.
void int4_cpu_pack(const uint8_t* q, int64_t n, int64_t k, Int4CpuPackIsa isa, uint8_t* packed);
void int4_cpu_unpack(const uint8_t* packed, int64_t n, int64_t k, Int4CpuPackIsa isa, uint8_t* q);

}  // namespace ao::formats

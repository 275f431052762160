// Throughput of the formats layer, scalar reference vs AVX2, in input bytes per second
// (f32 input for quantize / encode, f32 output for dequantize / decode).
//   ./build/bench_formats --benchmark_filter=mx   (arg 0 = scalar, 1 = AVX2)
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "ao/formats/affine.h"
#include "ao/formats/block_formats.h"
#include "ao/formats/float8_scaling.h"
#include "ao/formats/float_formats.h"

namespace {

using namespace ao::formats;
constexpr int64_t kN = 256, kK = 4096;

const std::vector<float>& input() {
  static const std::vector<float> x = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> v(kN * kK);
    for (auto& f : v) f = nd(rng);
    return v;
  }();
  return x;
}

bool set_simd(benchmark::State& st) {
  set_formats_simd(st.range(0) != 0);
  if (st.range(0) != 0 && !formats_use_avx2()) {
    st.SkipWithError("no AVX2 on this CPU");
    return false;
  }
  return true;
}

void finish(benchmark::State& st, int64_t bytes_per_iter) {
  st.SetBytesProcessed(st.iterations() * bytes_per_iter);
  set_formats_simd(true);
}

void BM_encode(benchmark::State& st, FloatFormat f) {
  if (!set_simd(st)) return;
  std::vector<uint8_t> q(kN * kK);
  for (auto _ : st) {
    encode_bulk(f, input().data(), q.data(), kN * kK, true);
    benchmark::DoNotOptimize(q.data());
  }
  finish(st, kN * kK * 4);
}

void BM_decode(benchmark::State& st, FloatFormat f) {
  if (!set_simd(st)) return;
  std::vector<uint8_t> q(kN * kK);
  encode_bulk(f, input().data(), q.data(), kN * kK, true);
  std::vector<float> y(kN * kK);
  for (auto _ : st) {
    decode_bulk(f, q.data(), y.data(), kN * kK);
    benchmark::DoNotOptimize(y.data());
  }
  finish(st, kN * kK * 4);
}

void BM_affine_quantize(benchmark::State& st, int bits, int64_t group) {
  if (!set_simd(st)) return;
  const Block b = Block::per_group(group);
  const IntFormat f = int_format(bits, true);
  std::vector<float> s(kN * kK / group);
  std::vector<int32_t> z(s.size());
  std::vector<uint8_t> q(kN * kK);
  for (auto _ : st) {
    choose_qparams_affine(input().data(), ao::DType::f32, kN, kK, b, MappingType::symmetric, f,
                          s.data(), z.data());
    quantize_affine(input().data(), ao::DType::f32, kN, kK, b, s.data(), ao::DType::f32, z.data(),
                    f, q.data());
    benchmark::DoNotOptimize(q.data());
  }
  finish(st, kN * kK * 4);
}

void BM_affine_dequantize(benchmark::State& st, int bits, int64_t group) {
  if (!set_simd(st)) return;
  const Block b = Block::per_group(group);
  const IntFormat f = int_format(bits, true);
  std::vector<float> s(kN * kK / group), y(kN * kK);
  std::vector<int32_t> z(s.size());
  std::vector<uint8_t> q(kN * kK);
  choose_qparams_affine(input().data(), ao::DType::f32, kN, kK, b, MappingType::symmetric, f,
                        s.data(), z.data());
  quantize_affine(input().data(), ao::DType::f32, kN, kK, b, s.data(), ao::DType::f32, z.data(), f,
                  q.data());
  for (auto _ : st) {
    dequantize_affine(q.data(), f, kN, kK, b, s.data(), z.data(), y.data(), ao::DType::f32);
    benchmark::DoNotOptimize(y.data());
  }
  finish(st, kN * kK * 4);
}

void BM_float8_rowwise(benchmark::State& st) {
  if (!set_simd(st)) return;
  std::vector<float> s(kN);
  std::vector<uint8_t> q(kN * kK);
  for (auto _ : st) {
    float8_choose_scale(input().data(), ao::DType::f32, kN, kK, Block::per_row(kK),
                        FloatFormat::f8_e4m3fn, s.data());
    float8_quantize(input().data(), ao::DType::f32, kN, kK, Block::per_row(kK),
                    FloatFormat::f8_e4m3fn, s.data(), q.data());
    benchmark::DoNotOptimize(q.data());
  }
  finish(st, kN * kK * 4);
}

void BM_block_quantize(benchmark::State& st, BlockFormat bf) {
  if (!set_simd(st)) return;
  const auto& f = block_format_info(bf);
  std::vector<uint8_t> q(block_qdata_bytes(f, kN, kK)), s(block_scale_count(f, kN, kK));
  for (auto _ : st) {
    f.quantize(input().data(), ao::DType::f32, kN, kK, q.data(), s.data(), BlockQuantOptions{});
    benchmark::DoNotOptimize(q.data());
  }
  finish(st, kN * kK * 4);
}

void BM_block_dequantize(benchmark::State& st, BlockFormat bf) {
  if (!set_simd(st)) return;
  const auto& f = block_format_info(bf);
  std::vector<uint8_t> q(block_qdata_bytes(f, kN, kK)), s(block_scale_count(f, kN, kK));
  std::vector<float> y(kN * kK);
  f.quantize(input().data(), ao::DType::f32, kN, kK, q.data(), s.data(), BlockQuantOptions{});
  for (auto _ : st) {
    f.dequantize(q.data(), s.data(), kN, kK, y.data(), ao::DType::f32, BlockQuantOptions{});
    benchmark::DoNotOptimize(y.data());
  }
  finish(st, kN * kK * 4);
}

#define SIMD_ARGS ->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)
BENCHMARK_CAPTURE(BM_encode, f8_e4m3fn, FloatFormat::f8_e4m3fn) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_encode, f8_e5m2, FloatFormat::f8_e5m2) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_encode, f6_e2m3, FloatFormat::f6_e2m3) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_encode, f6_e3m2, FloatFormat::f6_e3m2) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_encode, f4_e2m1, FloatFormat::f4_e2m1) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_encode, e8m0, FloatFormat::e8m0) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_decode, f8_e4m3fn, FloatFormat::f8_e4m3fn) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_decode, f4_e2m1, FloatFormat::f4_e2m1) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_affine_quantize, int8_row, 8, kK) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_affine_quantize, int4_g128, 4, 128) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_affine_dequantize, int8_row, 8, kK) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_affine_dequantize, int4_g128, 4, 128) SIMD_ARGS;
BENCHMARK(BM_float8_rowwise) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_quantize, mxfp8_e4m3, BlockFormat::mxfp8_e4m3) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_quantize, mxfp6_e2m3, BlockFormat::mxfp6_e2m3) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_quantize, mxfp4, BlockFormat::mxfp4) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_quantize, nvfp4, BlockFormat::nvfp4) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_dequantize, mxfp8_e4m3, BlockFormat::mxfp8_e4m3) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_dequantize, mxfp4, BlockFormat::mxfp4) SIMD_ARGS;
BENCHMARK_CAPTURE(BM_block_dequantize, nvfp4, BlockFormat::nvfp4) SIMD_ARGS;

}  // namespace

BENCHMARK_MAIN();

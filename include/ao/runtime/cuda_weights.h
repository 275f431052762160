// Host side of loading a model into the CudaEngine: TorchAO quantized Linear weights mapped onto
// the engine's weight layouts (PrequantizedWeight, cuda_engine.h) without re-quantizing, and the
// whole model's HostWeight list built from io::open_model_files(). Everything here runs without a
// GPU (and is unit-tested so); only CudaEngine::create_from_host needs one.
//
// Mapping (the numerics agree: the engine's dequantized value equals QTensor::dequantize() up to
// f32 rounding of the stored int4 bias):
//   Int8Tensor / IntxUnpackedToInt8Tensor, per row, zero point 0   -> int8wo (scale per row)
//   Int8Tensor / IntxUnpackedToInt8Tensor, group 32..256, q in [-8, 7] -> int4wo-gN
//   Int4Tensor (plain), group 32..256                                -> int4wo-gN
//   Int4TilePackedTo4dTensor (tinygemm), group 32..256               -> int4wo-gN
//   Float8Tensor per row / per tensor (e4m3)                         -> fp8-row / fp8-tensor
//   Float8Tensor with fp8 activations of the same granularity        -> fp8dq-row / fp8dq-tensor
// The other activation-quantized variants (Int8 dynamic, 8da4w) map their weights the same way
// but the engine runs them weight-only (activations stay bf16): a warning says so. Anything
// else (MX, NVFP4, int8 per group, int4 with a group the engine lacks) is dequantized on the host
// and handed over as f32, i.e. stored in CudaEngineOptions::format (bf16 by default) with a
// warning naming the type.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ao/core/error.h"
#include "ao/runtime/cuda_engine.h"

namespace ao::quant {
class QTensor;
}
namespace ao::io {
struct ModelFiles;
}

namespace ao::runtime {

// e4m3fn (no infinities; 0x7f / 0xff are NaN) to float.
inline float e4m3fn_to_float(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  float v;
  if (exp == 15 && man == 7)
    v = NAN;
  else if (exp == 0)
    v = std::ldexp(static_cast<float>(man), -9);
  else
    v = std::ldexp(1.f + man / 8.f, exp - 7);
  return sign ? -v : v;
}

// The f32 weight [n, k] the mapping describes (TorchAO's values). The engine multiplies by these,
// except that it stores int4 scale and zero in bf16 (exact for a bf16 checkpoint, rounded for an
// fp32 one) and rounds the weights to bf16 for prefill GEMMs.
inline std::vector<float> dequantize_prequantized(const PrequantizedWeight& w) {
  std::vector<float> out(static_cast<size_t>(w.n * w.k));
  for (int64_t r = 0; r < w.n; ++r)
    for (int64_t c = 0; c < w.k; ++c) {
      float v = 0.f;
      switch (w.format) {
        case CudaWeightFormat::int8wo:
          v = static_cast<float>(static_cast<int8_t>(w.data[r * w.k + c])) * w.scale[r];
          break;
        case CudaWeightFormat::fp8_row:
        case CudaWeightFormat::fp8_tensor:
        case CudaWeightFormat::fp8dq_row:
        case CudaWeightFormat::fp8dq_tensor:
          v = e4m3fn_to_float(w.data[r * w.k + c]) * w.scale[r];
          break;
        case CudaWeightFormat::int4wo: {
          const uint8_t byte = w.data[r * (w.k / 2) + c / 2];
          const float u = static_cast<float>((c % 2 == 0) ? (byte & 15) : (byte >> 4));
          const float* sb = &w.scale[(r * w.groups() + c / w.group_size) * 2];
          v = std::fma(u - 8.f, sb[0], sb[1]);
          break;
        }
        case CudaWeightFormat::bf16:
          throw Error("PrequantizedWeight: bf16 is not a prequantized format");
      }
      out[r * w.k + c] = v;
    }
  return out;
}

// Stacks the rows of `parts` (same format, group size and k), then reorders them: row r of the
// result is stacked row order[r] (empty order: as stacked). This is how the engine fuses q/k/v
// (with its RoPE pair permutation) and gate/up (interleaved); quantization is per row (per row
// group for int4), so the values of every row are unchanged.
inline PrequantizedWeight stack_prequantized_rows(
    const std::vector<const PrequantizedWeight*>& parts, const std::vector<int32_t>& order) {
  AO_CHECK(!parts.empty(), "stack_prequantized_rows: no parts");
  PrequantizedWeight out;
  const PrequantizedWeight& p0 = *parts[0];
  out.format = p0.format;
  out.group_size = p0.group_size;
  out.k = p0.k;
  out.source = p0.source;
  std::vector<std::pair<const PrequantizedWeight*, int64_t>> rows;
  for (const auto* p : parts) {
    AO_CHECK(p->format == p0.format && p->group_size == p0.group_size && p->k == p0.k,
             "stack_prequantized_rows: parts differ in format, group size or k");
    for (int64_t r = 0; r < p->n; ++r) rows.emplace_back(p, r);
  }
  out.n = static_cast<int64_t>(rows.size());
  AO_CHECK(order.empty() || static_cast<int64_t>(order.size()) == out.n,
           "stack_prequantized_rows: order has {} entries for {} rows", order.size(), out.n);
  const bool int4 = out.format == CudaWeightFormat::int4wo;
  const size_t row_bytes = static_cast<size_t>(int4 ? out.k / 2 : out.k);
  const size_t row_scales = static_cast<size_t>(int4 ? 2 * out.groups() : 1);
  out.data.resize(row_bytes * out.n);
  out.scale.resize(row_scales * out.n);
  for (int64_t r = 0; r < out.n; ++r) {
    const int64_t src = order.empty() ? r : order[r];
    AO_CHECK(src >= 0 && src < out.n, "stack_prequantized_rows: order entry {} out of range", src);
    const auto& [p, pr] = rows[src];
    std::memcpy(&out.data[r * row_bytes], &p->data[pr * row_bytes], row_bytes);
    std::memcpy(&out.scale[r * row_scales], &p->scale[pr * row_scales], row_scales * 4);
  }
  return out;
}

// Maps one TorchAO weight onto an engine layout with the same numerics (table above). Returns
// nullopt, with the reason in *why, when the engine has no such layout. *activation_dropped is set
// when the type also quantizes activations and the engine will not (all but fp8dq).
std::optional<PrequantizedWeight> map_qtensor_for_cuda(const quant::QTensor& q, std::string* why,
                                                       bool* activation_dropped = nullptr);

// The model's weights ready for CudaEngine::create_from_host: HF folder, .safetensors or
// llama2.c .bin, plain or TorchAO-quantized. Keeps the file mapping and every converted tensor
// alive as long as it lives.
struct CudaModelWeights {
  io::ModelConfig config;
  std::vector<HostWeight> weights;
  bool torchao = false;
  // Per source type: "Int4Tensor -> int4wo-g32: 35 weights", "MXTensor -> dequantized: 7 ...".
  std::vector<std::string> mapping;
  // TorchAO Linear weight name -> "int4wo-g32", "int8wo", "fp8-row", ... or "dequantized".
  std::map<std::string, std::string> format_of;

  struct Storage;
  std::shared_ptr<Storage> storage;
};
// Architectures the engine runs: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// llama2.c. Throws ao::NotSupported for others and ao::Error for unreadable files.
CudaModelWeights cuda_model_weights(const io::ModelFiles& files);

}  // namespace ao::runtime

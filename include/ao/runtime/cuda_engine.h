// CudaEngine: Llama-family inference on one NVIDIA GPU. Weights live on the device in bf16,
// int8 / int4 weight-only or fp8 (e4m3) form, fp8 optionally with dynamically quantized e4m3
// activations (prefill through cuBLASLt FP8); bf16 activations with fp32 accumulation and an
// fp32 residual stream; static KV cache; prefill through cuBLAS GEMMs + a tiled attention
// kernel; the decode step (embedding .. sampling) captured once in a CUDA graph that reads the
// position and token from device memory, so generation needs no host sync per token.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ao/core/dtype.h"
#include "ao/io/model_config.h"

namespace ao::io {
struct NamedTensor;
}

namespace ao::runtime {

// fp8-*: e4m3 weights with a per-tensor / per-row f32 scale, bf16 activations (weight-only).
// fp8dq-*: the same weights and e4m3 activations quantized on the fly with a per-tensor /
// per-row (token) scale, TorchAO's Float8DynamicActivationFloat8WeightConfig(PerTensor() /
// PerRow()) (the names are our quant config's short names).
enum class CudaWeightFormat { bf16, int8wo, int4wo, fp8_tensor, fp8_row, fp8dq_tensor, fp8dq_row };
// "bf16", "int8wo", "int4wo-g128" (group 32..256), "fp8-tensor", "fp8-row", "fp8dq-tensor",
// "fp8dq-row". Throws ao::Error.
CudaWeightFormat parse_cuda_weight_format(const std::string& s, int* group_size);

inline bool is_fp8(CudaWeightFormat f) {
  return f == CudaWeightFormat::fp8_tensor || f == CudaWeightFormat::fp8_row ||
         f == CudaWeightFormat::fp8dq_tensor || f == CudaWeightFormat::fp8dq_row;
}
inline bool fp8_per_tensor(CudaWeightFormat f) {
  return f == CudaWeightFormat::fp8_tensor || f == CudaWeightFormat::fp8dq_tensor;
}
inline bool fp8_dynamic_activation(CudaWeightFormat f) {
  return f == CudaWeightFormat::fp8dq_tensor || f == CudaWeightFormat::fp8dq_row;
}

inline std::string cuda_weight_format_name(CudaWeightFormat f, int group_size) {
  switch (f) {
    case CudaWeightFormat::bf16:
      return "bf16";
    case CudaWeightFormat::int8wo:
      return "int8wo";
    case CudaWeightFormat::int4wo:
      return "int4wo-g" + std::to_string(group_size);
    case CudaWeightFormat::fp8_tensor:
      return "fp8-tensor";
    case CudaWeightFormat::fp8_row:
      return "fp8-row";
    case CudaWeightFormat::fp8dq_tensor:
      return "fp8dq-tensor";
    case CudaWeightFormat::fp8dq_row:
      return "fp8dq-row";
  }
  return "?";
}

struct CudaEngineOptions {
  CudaWeightFormat format = CudaWeightFormat::bf16;
  int group_size = 128;    // int4wo
  int max_seq_len = 0;     // KV-cache capacity; 0 = min(config.max_seq_len, 4096)
  // Tokens per prefill chunk (longer prompts run in chunks; at most max_seq_len). Each chunk
  // dequantizes every quantized weight once, so larger chunks spread that over more tokens:
  // llama3-8b pp2048 int4 26237 tok/s in chunks of 512, 34422 in one of 2048 (docs/CUDA.md lab
  // note 95). Activation buffers grow with it (~145 KB per token for llama3-8b).
  int max_prefill = 2048;
  bool cuda_graph = true;  // capture the decode step
  int device = 0;
};

// A Linear weight [n, k] already quantized into one of the engine's layouts (from a TorchAO
// checkpoint, see runtime/cuda_weights.h), on the host and unpadded; the engine only pads and
// uploads it (no re-quantization).
//   int8wo:         data int8 [n, k], scale [n]: w = q * scale
//   fp8(dq)_row/tensor: data e4m3fn [n, k], scale [n] (per-tensor: all equal): w = q * scale
//   int4wo:         data [n, k/2] bytes, element k in nibble k % 2 (low first), u in [0, 15];
//                   scale [n, groups, 2] = {s, zero} per group of group_size along k (the
//                   last group may be partial): w = (u - 8) * s + zero (TorchAO's). The
//                   engine stores s and zero in bf16, as TorchAO does for bf16 models (fp32
//                   values are rounded to nearest, with a warning).
struct PrequantizedWeight {
  CudaWeightFormat format = CudaWeightFormat::int8wo;
  int group_size = 0;  // int4wo: 32, 64, 128 or 256
  int64_t n = 0, k = 0;
  std::vector<uint8_t> data;
  std::vector<float> scale;
  std::string source;  // what it was made from, e.g. "Int4Tensor"
  int64_t groups() const {
    return format == CudaWeightFormat::int4wo ? (k + group_size - 1) / group_size : 0;
  }
};

// One weight handed over from the host: contiguous, f32 / f16 / bf16, HF name. A Linear
// weight may instead point at a PrequantizedWeight (then data/dtype are unused, shape is
// {n, k}); it keeps its own format whatever CudaEngineOptions::format says.
struct HostWeight {
  std::string name;
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const PrequantizedWeight* quantized = nullptr;
};

struct SamplingParams {
  float temperature = 0.f;  // <= 0: greedy
  int top_k = 0;            // <= 0: off
  float top_p = 1.f;        // >= 1: off
  uint64_t seed = 0;
};

struct CudaBenchResult {
  std::string model, format, device;
  int64_t params = 0;
  double weight_gb = 0;  // bytes read per decode step, in 1e9
  int pp = 0, tg = 0;
  double pp_tok_s = 0, tg_tok_s = 0;
  // FLOPs performed / time: linear layers of every token, the lm_head of the last token, the
  // causal attention (until session 28 it was 2 * params * pp, the lm_head of every token).
  double pp_tflops = 0;
  double tg_gb_s = 0;    // weight bytes per token * tok/s
};

class CudaEngine {
 public:
  // Weights under HF names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
  // ...); Q/K rows in the order config.rope_interleaved says. CPU tensors, f32/f16/bf16.
  static std::unique_ptr<CudaEngine> create(const io::ModelConfig& config,
                                            const std::vector<io::NamedTensor>& weights,
                                            const CudaEngineOptions& options);
  static std::unique_ptr<CudaEngine> create_from_host(const io::ModelConfig& config,
                                                      const std::vector<HostWeight>& weights,
                                                      const CudaEngineOptions& options);
  // Random weights generated on the device (for benchmarks): config from synthetic_config().
  // Throws ao::Error, before allocating the weights, where they would not fit the device's free
  // memory (llama3-70b in bf16).
  static std::unique_ptr<CudaEngine> create_synthetic(const io::ModelConfig& config,
                                                      const CudaEngineOptions& options,
                                                      uint64_t seed = 1234);
  // "llama3-8b", "llama2-7b", "llama3-1b", "qwen2.5-7b", "llama3-70b"; throws ao::NotSupported for
  // other names.
  static io::ModelConfig synthetic_config(const std::string& name);

  ~CudaEngine();
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  const io::ModelConfig& config() const;
  int position() const;  // tokens in the KV cache
  void reset();          // empties the KV cache
  // Captures the decode step's CUDA graph again (and empties the KV cache): a captured kernel
  // keeps the launch choices of its capture, so a change of cuda::set_gemv_tuning() takes
  // effect on the graph only after this (the lab's A/B runs in bench_cuda_decode --ab).
  void recapture();

  // Appends `tokens` to the cache; returns the logits after the last one (f32, vocab).
  std::vector<float> prefill(const std::vector<int32_t>& tokens);
  // Appends `tokens` like prefill() and writes the logits after each of them to `logits`
  // ([tokens.size(), vocab] f32, row-major): every row of each chunk goes through the final
  // RMSNorm and the lm_head (the GEMV for chunks of up to 8 rows, else a cuBLAS GEMM with f32
  // output). The [chunk rows, vocab] device buffer is allocated on the first call (and grown
  // when a later chunk is longer).
  void prefill_all_logits(const std::vector<int32_t>& tokens, float* logits);
  // One decode step (through the CUDA graph when enabled): appends `token`, returns logits.
  std::vector<float> decode(int32_t token);
  // Prefill `prompt`, then sample `n` (<= 4096) tokens on the device; `on_token` gets each (in
  // order) and may return false to stop (EOS is the caller's to check). Returns the tokens
  // delivered. Steps run in batches of 8 CUDA-graph replays, so a stop wastes < 16 steps.
  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int n,
                                const SamplingParams& sampling,
                                const std::function<bool(int32_t)>& on_token = {});

  // llama-bench style: prefill of `pp` random tokens, then `tg` decode steps from an empty
  // cache; medians over `reps` runs.
  CudaBenchResult bench(int pp, int tg, int reps = 3);
  size_t weight_bytes_per_token() const;
  // Device bytes of the bf16 scratch that prefill dequantizes quantized weights into (at most
  // cuda::DequantGemmTuning::chunk_bytes per weight; 0 for bf16 models).
  size_t prefill_scratch_bytes() const;
  // Whether the decode step's int4 o projection takes its x from the attention as int4 digits
  // (cuda::AttentionTuning::o_digits, cuda::GemvInput::int4_digits) under the tunings in force.
  bool o_takes_int4_digits() const;
  // The decode step's o projection grid cap under the tunings in force (0: every SM; see
  // cuda::GemvTuning::decode_o_blocks and decode_o_spare_sms_int4).
  int o_max_blocks() const;

  struct Impl;

 private:
  explicit CudaEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// For `ao bench --device cuda --synthetic NAME`: builds the synthetic model and runs bench(),
// the prompt in chunks of at most `ubatch` tokens (CudaEngineOptions::max_prefill).
CudaBenchResult cuda_bench(const std::string& synthetic_model, const std::string& format, int pp,
                           int tg, int reps = 3, int ubatch = 512);
// Measured device-to-device copy bandwidth in GB/s (bytes read + written), `bytes` per copy.
double cuda_copy_bandwidth_gb_s(size_t bytes = size_t(1) << 30);
// Measured cuBLAS bf16 GEMM throughput in TFLOP/s for an m x n x k product.
double cuda_gemm_tflops(int m, int n, int k);
std::string cuda_device_name();

}  // namespace ao::runtime

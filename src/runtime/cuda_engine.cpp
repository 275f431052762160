// CudaEngine implementation (host side): weight upload and quantization, the prefill and
// decode schedules, CUDA-graph capture of the decode step, generation and benchmarking.
#include "ao/runtime/cuda_engine.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <random>

#include "ao/core/dtype.h"
#include "ao/core/error.h"
#include "ao/kernels/cuda/cublas_check.h"
#include "ao/kernels/cuda/gemm_dequant.h"
#include "ao/kernels/cuda/gemm_fp8.h"
#include "ao/kernels/cuda/kernels.h"
#include "ao/runtime/cuda_weights.h"

namespace ao::runtime {

using cuda::DeviceWeight;
using cuda::WeightFormat;

namespace {

int dtype_code(DType t, const std::string& name) {
  switch (t) {
    case DType::f32:
      return 0;
    case DType::f16:
      return 1;
    case DType::bf16:
      return 2;
    default:
      throw Error(fmt::format("CudaEngine: tensor '{}' has dtype {} (expected f32, f16 or bf16)",
                              name, static_cast<int>(t)));
  }
}
size_t dtype_bytes(DType t) { return t == DType::f32 ? 4 : 2; }

WeightFormat device_format(CudaWeightFormat f) {
  switch (f) {
    case CudaWeightFormat::bf16:
      return WeightFormat::bf16;
    case CudaWeightFormat::int8wo:
      return WeightFormat::int8;
    case CudaWeightFormat::int4wo:
      return WeightFormat::int4;
    case CudaWeightFormat::fp8_tensor:
    case CudaWeightFormat::fp8_row:
    case CudaWeightFormat::fp8dq_tensor:
    case CudaWeightFormat::fp8dq_row:
      return WeightFormat::fp8;
  }
  return WeightFormat::bf16;
}

cuda::ActQuant activation_quant(CudaWeightFormat f) {
  if (f == CudaWeightFormat::fp8dq_row) return cuda::ActQuant::fp8_row;
  if (f == CudaWeightFormat::fp8dq_tensor) return cuda::ActQuant::fp8_tensor;
  return cuda::ActQuant::none;
}

// Warnings straight to stderr (this file also builds without the core library's logger).
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, "[warning] {}\n", fmt::format(f, std::forward<Args>(args)...));
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

CudaWeightFormat parse_cuda_weight_format(const std::string& s, int* group_size) {
  if (s == "bf16") return CudaWeightFormat::bf16;
  if (s == "int8wo") return CudaWeightFormat::int8wo;
  if (s == "fp8-tensor") return CudaWeightFormat::fp8_tensor;
  if (s == "fp8-row") return CudaWeightFormat::fp8_row;
  if (s == "fp8dq-tensor") return CudaWeightFormat::fp8dq_tensor;
  if (s == "fp8dq-row") return CudaWeightFormat::fp8dq_row;
  if (s.rfind("int4wo", 0) == 0) {
    int g = 128;
    if (s.size() > 6) {
      if (s.rfind("int4wo-g", 0) != 0) throw Error("unknown CUDA weight format '" + s + "'");
      g = std::atoi(s.c_str() + 8);
    }
    if (g != 32 && g != 64 && g != 128 && g != 256)
      throw Error(fmt::format("int4wo group size must be 32, 64, 128 or 256 (got '{}')", s));
    if (group_size) *group_size = g;
    return CudaWeightFormat::int4wo;
  }
  throw Error("unknown CUDA weight format '" + s +
              "' (expected bf16, int8wo, int4wo-gN, fp8-tensor, fp8-row, fp8dq-tensor, "
              "fp8dq-row)");
}

struct Layer {
  DeviceWeight qkv, o, gate_up, down;
  uint16_t* attn_norm = nullptr;
  uint16_t* mlp_norm = nullptr;
  uint16_t* qkv_bias = nullptr;
  uint16_t* k_cache = nullptr;
  uint16_t* v_cache = nullptr;
};

struct CudaEngine::Impl {
  io::ModelConfig cfg;
  CudaEngineOptions opt;
  int dim = 0, hidden = 0, n_layers = 0, n_heads = 0, n_kv = 0, hd = 0, vocab = 0, max_seq = 0;
  int qkv_dim = 0, max_m = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  std::vector<void*> allocations;

  uint16_t* embed = nullptr;
  uint16_t* final_norm = nullptr;
  DeviceWeight lm_head;
  std::vector<Layer> layers;
  float* inv_freq = nullptr;

  float* resid = nullptr;
  uint16_t *xn = nullptr, *qkv = nullptr, *q = nullptr, *attn = nullptr, *tmp = nullptr,
           *gu = nullptr, *h = nullptr;
  float* logits = nullptr;
  void* attn_ws = nullptr;  // decode attention partials + counters (zeroed once)
  // The decode attention's output staged for an int4 o projection (GemvInput::int4_digits).
  uint8_t* o_digits = nullptr;
  float* scratch = nullptr;
  // Dynamic fp8 activations for the cuBLASLt FP8 GEMM (only when a weight asks for them).
  std::unique_ptr<cuda::Fp8Gemm> fp8_gemm;
  uint8_t* act_q = nullptr;    // e4m3 [max_m, act_kp]
  float* act_scale = nullptr;  // [max_m]
  float* act_amax = nullptr;   // [max_m], per-tensor workspace
  int64_t act_kp = 0;          // largest padded K of an activation-quantized weight
  bool fp8_fallback_warned = false;
  int32_t *d_pos = nullptr, *d_token = nullptr, *d_tokens = nullptr, *d_out = nullptr,
          *d_n_out = nullptr;
  cuda::SamplerState* d_sampler = nullptr;
  int32_t* h_pinned = nullptr;  // [0] pos, [1] token, [16..] tokens / outputs
  static constexpr int kOutCap = 1 << 16;
  int host_pos = 0;
  // Prefill GEMMs of quantized weights (their bf16 copies in chunks; docs/CUDA.md lab note 94).
  std::unique_ptr<cuda::DequantGemm> deq_gemm = std::make_unique<cuda::DequantGemm>();
  int64_t int4_scales_rounded = 0;  // prequantized int4 groups whose s or zero was not bf16

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t graph_exec = nullptr;

  ~Impl() {
    if (graph_exec) cudaGraphExecDestroy(graph_exec);
    if (graph) cudaGraphDestroy(graph);
    if (stream) cudaStreamSynchronize(stream);
    for (void* p : allocations) cudaFree(p);
    if (h_pinned) cudaFreeHost(h_pinned);
    fp8_gemm.reset();
    deq_gemm.reset();
    if (cublas) cublasDestroy(cublas);
    if (stream) cudaStreamDestroy(stream);
  }

  // Frees an alloc() buffer early (the stream must no longer use it) and nulls the pointer.
  template <typename T>
  void release(T*& p) {
    if (!p) return;
    const auto it = std::find(allocations.begin(), allocations.end(), static_cast<void*>(p));
    AO_CHECK(it != allocations.end(), "CudaEngine: release of a buffer alloc() did not make");
    allocations.erase(it);
    AO_CUDA_CHECK(cudaFree(p));
    p = nullptr;
  }
  template <typename T>
  T* alloc(size_t count) {
    void* p = nullptr;
    AO_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count * sizeof(T), 16)));
    allocations.push_back(p);
    return static_cast<T*>(p);
  }

  void init(const io::ModelConfig& c, const CudaEngineOptions& o) {
    cfg = c;
    opt = o;
    dim = c.dim;
    hidden = c.hidden_dim;
    n_layers = c.n_layers;
    n_heads = c.n_heads;
    n_kv = c.n_kv_heads ? c.n_kv_heads : c.n_heads;
    hd = c.head_dim ? c.head_dim : c.dim / c.n_heads;
    vocab = c.vocab_size;
    AO_CHECK(dim > 0 && hidden > 0 && n_layers > 0 && n_heads > 0 && vocab > 0,
             "CudaEngine: config has a zero dimension (dim {}, hidden {}, layers {}, heads {})",
             dim, hidden, n_layers, n_heads);
    AO_CHECK(n_heads % n_kv == 0, "CudaEngine: n_heads {} not a multiple of n_kv_heads {}", n_heads,
             n_kv);
    max_seq = o.max_seq_len > 0 ? o.max_seq_len
                                : std::min(c.max_seq_len > 0 ? c.max_seq_len : 4096, 4096);
    qkv_dim = (n_heads + 2 * n_kv) * hd;
    max_m = std::max(1, std::min(o.max_prefill, max_seq));  // a chunk never exceeds the cache
    AO_CUDA_CHECK(cudaSetDevice(o.device));
    AO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    AO_CUBLAS_CHECK(cublasCreate(&cublas));
    AO_CUBLAS_CHECK(cublasSetStream(cublas, stream));
    AO_CUDA_CHECK(cudaMallocHost(&h_pinned, (16 + std::max(max_m, 4096)) * sizeof(int32_t)));

    // RoPE inverse frequencies (HF, with llama3 / linear scaling).
    std::vector<float> f(hd / 2);
    for (int i = 0; i < hd / 2; ++i) {
      double inv = 1.0 / std::pow(static_cast<double>(c.rope_theta), (2.0 * i) / hd);
      const auto& rs = c.rope_scaling;
      if (rs.type == "linear") {
        inv /= rs.factor;
      } else if (rs.type == "llama3") {
        const double old_len = rs.original_max_position_embeddings;
        const double low_wl = old_len / rs.low_freq_factor, high_wl = old_len / rs.high_freq_factor;
        const double wl = 2 * M_PI / inv;
        if (wl > low_wl) {
          inv /= rs.factor;
        } else if (wl >= high_wl) {
          const double smooth =
              (old_len / wl - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
          inv = (1 - smooth) * inv / rs.factor + smooth * inv;
        }
      }
      f[i] = static_cast<float>(inv);
    }
    inv_freq = alloc<float>(f.size());
    AO_CUDA_CHECK(
        cudaMemcpyAsync(inv_freq, f.data(), f.size() * 4, cudaMemcpyHostToDevice, stream));

    const int M = max_m;
    resid = alloc<float>(static_cast<size_t>(M) * dim);
    xn = alloc<uint16_t>(static_cast<size_t>(M) * dim);
    qkv = alloc<uint16_t>(static_cast<size_t>(M) * qkv_dim);
    q = alloc<uint16_t>(static_cast<size_t>(M) * n_heads * hd);
    attn = alloc<uint16_t>(static_cast<size_t>(M) * n_heads * hd);
    tmp = alloc<uint16_t>(static_cast<size_t>(M) * dim);
    gu = alloc<uint16_t>(static_cast<size_t>(M) * 2 * hidden);
    h = alloc<uint16_t>(static_cast<size_t>(M) * hidden);
    logits = alloc<float>(vocab);
    const size_t ws = cuda::attention_decode_workspace(attn_args());
    attn_ws = alloc<uint8_t>(ws);
    AO_CUDA_CHECK(cudaMemsetAsync(attn_ws, 0, ws, stream));
    if ((n_heads * hd) % 128 == 0)
      o_digits = alloc<uint8_t>(cuda::int4_digits_bytes(static_cast<int64_t>(n_heads) * hd));
    scratch = alloc<float>(16);
    d_pos = alloc<int32_t>(1);
    d_token = alloc<int32_t>(1);
    d_tokens = alloc<int32_t>(M);
    d_out = alloc<int32_t>(kOutCap);
    d_n_out = alloc<int32_t>(1);
    d_sampler = alloc<cuda::SamplerState>(1);
    AO_CUDA_CHECK(cudaMemsetAsync(d_pos, 0, 4, stream));
    AO_CUDA_CHECK(cudaMemsetAsync(d_token, 0, 4, stream));
    AO_CUDA_CHECK(cudaMemsetAsync(d_n_out, 0, 4, stream));
    cuda::SamplerState st{0.f, 0, 1.f, 0, 0, 0};
    AO_CUDA_CHECK(cudaMemcpyAsync(d_sampler, &st, sizeof(st), cudaMemcpyHostToDevice, stream));
    layers.resize(n_layers);
    const size_t cache = static_cast<size_t>(n_kv) * max_seq * hd;
    for (auto& L : layers) {
      L.k_cache = alloc<uint16_t>(cache);
      L.v_cache = alloc<uint16_t>(cache);
      AO_CUDA_CHECK(cudaMemsetAsync(L.k_cache, 0, cache * 2, stream));
      AO_CUDA_CHECK(cudaMemsetAsync(L.v_cache, 0, cache * 2, stream));
    }
  }

  cuda::AttentionArgs attn_args() const {
    cuda::AttentionArgs a;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = hd;
    a.max_seq = max_seq;
    a.scale = 1.f / std::sqrt(static_cast<float>(hd));
    return a;
  }

  // Allocates a device weight of the engine's format and fills it from bf16 [n, k] (device).
  DeviceWeight make_weight(const uint16_t* src_bf16, int64_t n, int64_t k) {
    DeviceWeight w;
    w.format = device_format(opt.format);
    w.n = n;
    w.k = k;
    w.group_size = w.format == WeightFormat::int4 ? opt.group_size : 0;
    w.k_padded = cuda::gemv_padded_k(w.format, n, k, w.group_size);
    w.act_quant = activation_quant(opt.format);
    w.per_tensor_scale = fp8_per_tensor(opt.format);
    if (w.format == WeightFormat::int4 && k % opt.group_size != 0)
      throw Error(fmt::format("CudaEngine: int4wo-g{} needs K ({}) divisible by the group size",
                              opt.group_size, k));
    const size_t data_bytes = w.format == WeightFormat::bf16   ? n * w.k_padded * 2
                              : w.format == WeightFormat::int4 ? n * w.k_padded / 2
                                                               : n * w.k_padded;
    w.data = alloc<uint8_t>(data_bytes);
    if (w.format == WeightFormat::int4)
      w.scale = alloc<float>(w.scale_bytes() / 4);  // tile-major (cuda::int4_scale_index)
    else if (w.format != WeightFormat::bf16)
      w.scale = alloc<float>(n);
    cuda::quantize_weight(src_bf16, w, fp8_per_tensor(opt.format), scratch, stream);
    note_prefill_needs(w);
    return w;
  }

  // Pads and uploads a weight already in the engine's layout (from a TorchAO checkpoint).
  DeviceWeight upload_prequantized(const PrequantizedWeight& p) {
    DeviceWeight w;
    w.format = device_format(p.format);
    w.act_quant = activation_quant(p.format);
    AO_CHECK(w.format != WeightFormat::bf16, "CudaEngine: prequantized weight in bf16");
    w.n = p.n;
    w.k = p.k;
    const bool int4 = w.format == WeightFormat::int4;
    w.k_padded = cuda::gemv_padded_k(w.format, p.n, p.k, int4 ? p.group_size : 0);
    if (int4) {
      AO_CHECK((p.group_size == 32 || p.group_size == 64 || p.group_size == 128 ||
                p.group_size == 256) &&
                   p.k % 2 == 0 && w.k_padded % p.group_size == 0,
               "CudaEngine: prequantized int4 weight with group size {} and K {}", p.group_size,
               p.k);
      w.group_size = p.group_size;
    }
    const size_t n = static_cast<size_t>(p.n);
    const size_t row_in = static_cast<size_t>(int4 ? p.k / 2 : p.k);
    const size_t row_out = static_cast<size_t>(int4 ? w.k_padded / 2 : w.k_padded);
    const size_t sc_in = int4 ? 2 * static_cast<size_t>(p.groups()) : 1;
    AO_CHECK(p.data.size() == row_in * n && p.scale.size() == sc_in * n,
             "CudaEngine: prequantized weight [{}, {}] has {} data bytes and {} scales", p.n, p.k,
             p.data.size(), p.scale.size());
    // Padding: int4 nibble 8 (with the group's scale: the zero point; x is 0 there anyway),
    // padding groups and the last scale tile's rows past N s = zero = 0; int8 / fp8 zeros.
    // int4's {s, zero} become scale words of bf16 s and zero (int4_pack_scale) at their
    // tile-major places (cuda::int4_scale_index). TorchAO keeps both in the model's dtype, so for
    // bf16 checkpoints this is exact; other values are rounded to bf16, and counted.
    std::vector<uint8_t> data(row_out * n, int4 ? 0x88 : 0);
    std::vector<uint32_t> scale(int4 ? w.scale_bytes() / 4 : n, 0u);
    const int64_t groups_out = int4 ? w.k_padded / p.group_size : 1;
    for (size_t r = 0; r < n; ++r) {
      std::memcpy(&data[r * row_out], &p.data[r * row_in], row_in);
      if (!int4) {
        std::memcpy(&scale[r], &p.scale[r], 4);
        continue;
      }
      for (int64_t gi = 0; gi < p.groups(); ++gi) {
        const float s = p.scale[r * sc_in + 2 * gi];
        const float zero = p.scale[r * sc_in + 2 * gi + 1];
        const uint16_t sb = f32_to_bf16(s), zb = f32_to_bf16(zero);
        if (bf16_to_f32(sb) != s || bf16_to_f32(zb) != zero) ++int4_scales_rounded;
        scale[static_cast<size_t>(cuda::int4_scale_index(static_cast<int64_t>(r), gi,
                                                         groups_out))] =
            cuda::int4_pack_scale(sb, zb);
      }
    }
    // Fused q/k/v or gate/up parts of a per-tensor checkpoint keep one scale each.
    w.per_tensor_scale = !int4 && std::all_of(p.scale.begin(), p.scale.end(),
                                              [&](float v) { return v == p.scale[0]; });
    w.data = alloc<uint8_t>(data.size());
    w.scale = alloc<float>(scale.size());
    AO_CUDA_CHECK(
        cudaMemcpyAsync(w.data, data.data(), data.size(), cudaMemcpyHostToDevice, stream));
    AO_CUDA_CHECK(
        cudaMemcpyAsync(w.scale, scale.data(), scale.size() * 4, cudaMemcpyHostToDevice, stream));
    note_prefill_needs(w);
    return w;
  }

  // Sizes the prefill scratch a weight needs: the bf16 chunks of a quantized weight for cuBLAS,
  // or the fp8 activation buffer of the cuBLASLt FP8 GEMM (no dequantization then).
  void note_prefill_needs(const DeviceWeight& w) {
    if (w.act_quant != cuda::ActQuant::none)
      act_kp = std::max(act_kp, w.k_padded);
    else
      deq_gemm->reserve(w);
  }

  void finish_setup() {
    if (act_kp) {
      act_q = alloc<uint8_t>(static_cast<size_t>(max_m) * act_kp);
      act_scale = alloc<float>(max_m);
      act_amax = alloc<float>(max_m);
      fp8_gemm = std::make_unique<cuda::Fp8Gemm>();
    }
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (opt.cuda_graph) capture();
  }

  // ---- schedules --------------------------------------------------------------------------
  // y [m, N] bf16 = x [m, K] bf16 (row stride K) times w^T.
  // Whether the GEMV takes m rows of x: batches up to 8 (per-tensor fp8 activation scaling
  // needs all rows in one launch: batch 1, 2, 4 or 8).
  static bool gemv_takes(const DeviceWeight& w, int m) {
    return m <= 8 && (w.act_quant != cuda::ActQuant::fp8_tensor || (m & (m - 1)) == 0);
  }
  void gemv_rows(const DeviceWeight& w, const uint16_t* x, int m, cuda::GemvOutput out, void* y) {
    cuda::GemvArgs a;
    a.m = m;
    a.x = x;
    a.output = out;
    a.y = y;
    cuda::gemv(w, a, stream);
  }
  // y [m, N] (bf16 or f32) = x W^T through cuBLAS, quantized weights dequantized to bf16 first
  // (chunk by chunk: cuda::DequantGemm).
  void gemm_dequantized(const DeviceWeight& w, const uint16_t* x, int m, void* y,
                        cudaDataType out_type) {
    deq_gemm->run(cublas, w, x, m, y, out_type, stream);
  }

  void linear(const DeviceWeight& w, const uint16_t* x, int m, uint16_t* y) {
    if (gemv_takes(w, m))
      gemv_rows(w, x, m, cuda::GemvOutput::bf16, y);
    else if (w.act_quant != cuda::ActQuant::none)
      linear_fp8(w, x, m, y);
    else
      gemm_dequantized(w, x, m, y, CUDA_R_16BF);
  }

  // Dynamic fp8 activations: quantize x, then the cuBLASLt FP8 GEMM (no dequantization).
  void linear_fp8(const DeviceWeight& w, const uint16_t* x, int m, uint16_t* y) {
    cuda::quantize_activation_fp8(x, w.k, m, w.k, w.act_quant, act_q, w.k_padded, act_scale,
                                  act_amax, stream);
    // Scalar scales when both are per tensor; otherwise outer vectors (a per-tensor activation
    // scale is then m equal values, e.g. for q/k/v parts with different weight scales).
    const bool scalar = w.act_quant == cuda::ActQuant::fp8_tensor && w.per_tensor_scale;
    fp8_gemm->run(w, act_q, act_scale, m, scalar, y, stream);
    if (!fp8_fallback_warned && fp8_gemm->last_path() == cuda::Fp8GemmPath::epilogue_scales) {
      warn(
          "CudaEngine: cuBLASLt has no FP8 GEMM with {} scales on this GPU; using an unscaled "
          "FP8 GEMM and a scaling epilogue",
          scalar ? "scalar" : "per-row vector");
      fp8_fallback_warned = true;
    }
  }

  cuda::RopeArgs rope_args(const Layer& L) const {
    cuda::RopeArgs r;
    r.n_heads = n_heads;
    r.n_kv_heads = n_kv;
    r.head_dim = hd;
    r.interleaved = cfg.rope_interleaved;
    r.paired = true;  // qkv rows are stored pair-adjacent (see create_from_host)
    r.inv_freq = inv_freq;
    r.bias = L.qkv_bias;
    r.max_seq = max_seq;
    return r;
  }

  // Enqueues the prefill of m tokens already in d_tokens at position *d_pos; leaves the
  // logits of the last token in `logits`.
  void enqueue_prefill(int m) {
    const float eps = cfg.norm_eps;
    cuda::embedding(embed, d_tokens, m, dim, resid, stream);
    const auto aa = attn_args();
    for (int l = 0; l < n_layers; ++l) {
      Layer& L = layers[l];
      cuda::add_rmsnorm(resid, l == 0 ? nullptr : tmp, L.attn_norm, eps, m, dim, xn, stream);
      linear(L.qkv, xn, m, qkv);
      cuda::rope_kv_append(qkv, m, d_pos, rope_args(L), q, L.k_cache, L.v_cache, stream);
      cuda::attention_prefill(q, m, L.k_cache, L.v_cache, d_pos, aa, attn, stream);
      linear(L.o, attn, m, tmp);
      cuda::add_rmsnorm(resid, tmp, L.mlp_norm, eps, m, dim, xn, stream);
      linear(L.gate_up, xn, m, gu);
      cuda::swiglu(gu, m, hidden, h, stream);
      linear(L.down, h, m, tmp);
    }
    cuda::add_rmsnorm(resid, tmp, final_norm, eps, m, dim, xn, stream);
    cuda::GemvArgs a;
    a.m = 1;
    a.x = xn + static_cast<size_t>(m - 1) * dim;
    a.output = cuda::GemvOutput::f32;
    a.y = logits;
    cuda::gemv(lm_head, a, stream);
  }

  // GEMV arguments of the decode step: RMSNorm(resid) * norm in the prologue, or a bf16 input
  // whose product is added to the residual stream.
  cuda::GemvArgs normed_input(const uint16_t* norm, cuda::GemvOutput out, void* y) const {
    cuda::GemvArgs a;
    a.input = cuda::GemvInput::rmsnorm;
    a.x = resid;
    a.rms_weight = norm;
    a.eps = cfg.norm_eps;
    a.output = out;
    a.y = y;
    return a;
  }
  // The o projection's grid cap (GemvTuning::decode_o_blocks, decode_o_spare_sms_int4).
  int o_max_blocks(bool odig) const {
    const cuda::GemvTuning t = cuda::gemv_tuning();
    if (t.decode_o_blocks > 0) return t.decode_o_blocks;
    if (!odig || t.decode_o_spare_sms_int4 <= 0) return 0;
    int dev = 0, sms = 0;
    AO_CUDA_CHECK(cudaGetDevice(&dev));
    AO_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return std::max(1, sms - t.decode_o_spare_sms_int4);
  }
  cuda::GemvArgs add_to_residual(const uint16_t* x) const {
    cuda::GemvArgs a;
    a.x = x;
    a.output = cuda::GemvOutput::add_residual;
    a.y = resid;
    return a;
  }

  // Whether the decode step's attention hands the o projection its x as int4 digits
  // (AttentionTuning::o_digits; GemvInput::int4_digits): int4 o weights on the TMA kernel and a
  // head size the attention's v2 kernel stages (docs/CUDA.md lab note 86).
  bool o_takes_digits() const {
    if (!cuda::attention_tuning().o_digits || o_digits == nullptr || layers.empty()) return false;
    const DeviceWeight& o = layers[0].o;
    return o.format == WeightFormat::int4 && o.k == static_cast<int64_t>(n_heads) * hd &&
           cuda::gemv_takes_int4_digits(o) && cuda::attention_decode_writes_int4_digits(attn_args());
  }

  // One decode step: token *d_token at position *d_pos -> logits, then sample into d_token,
  // d_out, and advance *d_pos.
  void enqueue_decode() {
    cuda::embedding(embed, d_token, 1, dim, resid, stream);
    const auto aa = attn_args();
    const bool odig = o_takes_digits();
    for (int l = 0; l < n_layers; ++l) {
      Layer& L = layers[l];
      // Each GEMV names the weight that follows it (GemvArgs::next: the L2 prefetch of its head
      // while this one computes, GemvTuning::tma_prefetch_next_bytes).
      // bias + RoPE + KV append fused in the epilogue
      cuda::GemvArgs a = normed_input(L.attn_norm, cuda::GemvOutput::rope_kv, nullptr);
      a.rope = rope_args(L);
      a.pos = d_pos;
      a.q_out = q;
      a.k_cache = L.k_cache;
      a.v_cache = L.v_cache;
      a.next = &L.o;
      cuda::gemv(L.qkv, a, stream);
      cuda::attention_decode(q, L.k_cache, L.v_cache, d_pos, aa, attn_ws, attn, stream,
                             odig ? o_digits : nullptr);
      a = add_to_residual(attn);
      if (odig) {
        a.input = cuda::GemvInput::int4_digits;
        a.x = o_digits;
      }
      a.next = &L.gate_up;
      a.max_blocks = o_max_blocks(odig);
      cuda::gemv(L.o, a, stream);
      // gate/up rows interleaved: h = silu(g) * u
      a = normed_input(L.mlp_norm, cuda::GemvOutput::swiglu, h);
      a.next = &L.down;
      cuda::gemv(L.gate_up, a, stream);
      a = add_to_residual(h);
      a.next = l + 1 < n_layers ? &layers[l + 1].qkv : &lm_head;
      cuda::gemv(L.down, a, stream);
    }
    cuda::gemv(lm_head, normed_input(final_norm, cuda::GemvOutput::f32, logits), stream);
    cuda::sample(logits, vocab, d_sampler, d_token, d_out, kOutCap, d_n_out, d_pos, 1, stream);
  }

  void run_decode_step() {
    if (graph_exec)
      AO_CUDA_CHECK(cudaGraphLaunch(graph_exec, stream));
    else
      enqueue_decode();
  }

  void capture() {
    if (graph_exec) AO_CUDA_CHECK(cudaGraphExecDestroy(graph_exec));
    if (graph) AO_CUDA_CHECK(cudaGraphDestroy(graph));
    graph_exec = nullptr, graph = nullptr;
    // One eager step first: kernels' attributes are set outside the capture.
    set_pos(0);
    enqueue_decode();
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
    AO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    enqueue_decode();
    AO_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    AO_CUDA_CHECK(cudaGraphInstantiate(&graph_exec, graph, 0));
    set_pos(0);
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  // Writes host_pos = p to the device (synchronously with the stream's work).
  void set_pos(int p) {
    host_pos = p;
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
    h_pinned[0] = p;
    AO_CUDA_CHECK(cudaMemcpyAsync(d_pos, &h_pinned[0], 4, cudaMemcpyHostToDevice, stream));
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void check_room(int n) const {
    if (host_pos + n > max_seq)
      throw Error(fmt::format("CudaEngine: KV cache full ({} + {} tokens > capacity {})", host_pos,
                              n, max_seq));
  }

  // Prefill in chunks of max_m tokens; logits of the last token stay in `logits`.
  // `after_chunk(offset, m)`, when given, enqueues more work on each chunk's final hidden
  // states (xn) before the next chunk overwrites them.
  void prefill_tokens(const std::vector<int32_t>& tokens,
                      const std::function<void(size_t, int)>& after_chunk = {}) {
    AO_CHECK(!tokens.empty(), "CudaEngine::prefill: no tokens");
    check_room(static_cast<int>(tokens.size()));
    for (int32_t t : tokens)
      AO_CHECK(t >= 0 && t < vocab, "CudaEngine: token id {} outside the vocabulary ({})", t,
               vocab);
    for (size_t off = 0; off < tokens.size(); off += max_m) {
      const int m = static_cast<int>(std::min<size_t>(max_m, tokens.size() - off));
      AO_CUDA_CHECK(cudaStreamSynchronize(stream));
      std::memcpy(&h_pinned[16], tokens.data() + off, m * sizeof(int32_t));
      AO_CUDA_CHECK(cudaMemcpyAsync(d_tokens, &h_pinned[16], m * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, stream));
      enqueue_prefill(m);
      if (after_chunk) after_chunk(off, m);
      set_pos(host_pos + m);
    }
  }

  // ---- logits of every prefill position (perplexity) -----------------------------------------
  float* all_logits = nullptr;          // [rows, vocab] f32, allocated on first use
  uint16_t* all_logits_bf16 = nullptr;  // [rows, vocab], fp8-activation lm_head only
  int all_logits_rows = 0;              // rows allocated: the largest chunk so far

  // Room for m rows of all-position logits (grown, never shrunk: a window shorter than max_m
  // does not pay for max_m rows of vocab-wide f32).
  void ensure_all_logits(int m) {
    if (m <= all_logits_rows) return;
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
    release(all_logits);
    release(all_logits_bf16);
    all_logits = alloc<float>(static_cast<size_t>(m) * vocab);
    if (lm_head.act_quant != cuda::ActQuant::none)
      all_logits_bf16 = alloc<uint16_t>(static_cast<size_t>(m) * vocab);
    all_logits_rows = m;
  }

  // After enqueue_prefill(m): the lm_head of all m final-normed rows in xn into all_logits, in
  // f32 like the last-token GEMV (and the CPU model). m <= 8: the GEMV; else cuBLAS on bf16
  // operands with f32 accumulation and output (a quantized lm_head is dequantized to bf16 first,
  // as linear() does for prefill).
  void enqueue_all_logits(int m) {
    ensure_all_logits(m);
    if (gemv_takes(lm_head, m)) {
      gemv_rows(lm_head, xn, m, cuda::GemvOutput::f32, all_logits);
    } else if (lm_head.act_quant != cuda::ActQuant::none) {
      // fp8 activations: the FP8 GEMM (bf16 logits, as torch._scaled_mm gives TorchAO's bf16
      // model), widened to f32; no dequantized copy exists for these weights.
      linear_fp8(lm_head, xn, m, all_logits_bf16);
      cuda::bf16_to_f32(all_logits_bf16, static_cast<int64_t>(m) * vocab, all_logits, stream);
    } else {
      gemm_dequantized(lm_head, xn, m, all_logits, CUDA_R_32F);
    }
  }

  std::vector<float> read_logits() {
    std::vector<float> out(vocab);
    AO_CUDA_CHECK(cudaMemcpyAsync(out.data(), logits, vocab * 4, cudaMemcpyDeviceToHost, stream));
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
    return out;
  }

  void set_sampler(const SamplingParams& s) {
    cuda::SamplerState st{s.temperature, s.top_k, s.top_p, 0, s.seed, 0};
    AO_CUDA_CHECK(cudaMemcpyAsync(d_sampler, &st, sizeof(st), cudaMemcpyHostToDevice, stream));
    AO_CUDA_CHECK(cudaMemsetAsync(d_n_out, 0, 4, stream));
    AO_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  size_t weight_bytes() const {
    size_t b = lm_head.bytes() + static_cast<size_t>(dim) * 2;
    for (const auto& L : layers)
      b += L.qkv.bytes() + L.o.bytes() + L.gate_up.bytes() + L.down.bytes() +
           static_cast<size_t>(dim) * 4;
    return b;
  }
  // The FLOPs a prefill of pp tokens from position 0 performs, in chunks of max_m as bench()
  // runs it: every linear layer for every token, the lm_head for each chunk's last token only,
  // and the causal attention (QK^T and PV: 4 head_dim FLOPs per query head and key).
  double prefill_flops(int pp) const {
    const double lm = static_cast<double>(lm_head.n) * lm_head.k;
    const double body = static_cast<double>(linear_params()) - lm;
    double f = 0;
    for (int off = 0; off < pp; off += max_m) {
      const int m = std::min(max_m, pp - off);
      f += 2.0 * body * m + 2.0 * lm;
    }
    const double keys = 0.5 * static_cast<double>(pp) * (pp + 1);  // sum over positions of p + 1
    return f + 4.0 * hd * n_heads * n_layers * keys;
  }
  int64_t linear_params() const {
    int64_t p = lm_head.n * lm_head.k;
    for (const auto& L : layers)
      p += L.qkv.n * L.qkv.k + L.o.n * L.o.k + L.gate_up.n * L.gate_up.k + L.down.n * L.down.k;
    return p;
  }
};

// ---- construction ----------------------------------------------------------------------------

CudaEngine::CudaEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaEngine::~CudaEngine() = default;
const io::ModelConfig& CudaEngine::config() const { return impl_->cfg; }
int CudaEngine::position() const { return impl_->host_pos; }
void CudaEngine::reset() { impl_->set_pos(0); }
void CudaEngine::recapture() {
  if (impl_->opt.cuda_graph) impl_->capture();
}
size_t CudaEngine::weight_bytes_per_token() const { return impl_->weight_bytes(); }
size_t CudaEngine::prefill_scratch_bytes() const { return impl_->deq_gemm->scratch_bytes(); }
bool CudaEngine::o_takes_int4_digits() const { return impl_->o_takes_digits(); }
int CudaEngine::o_max_blocks() const { return impl_->o_max_blocks(impl_->o_takes_digits()); }

std::unique_ptr<CudaEngine> CudaEngine::create_from_host(const io::ModelConfig& cfg,
                                                         const std::vector<HostWeight>& weights,
                                                         const CudaEngineOptions& opt) {
  auto impl = std::make_unique<Impl>();
  Impl& e = *impl;
  e.init(cfg, opt);
  std::map<std::string, const HostWeight*> by_name;
  for (const auto& w : weights) by_name[w.name] = &w;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> const HostWeight& {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw Error("CudaEngine: missing weight '" + name + "'");
    const HostWeight& w = *it->second;
    if (w.shape != shape)
      throw Error(fmt::format("CudaEngine: weight '{}' has shape [{}], expected [{}]", name,
                              fmt::join(w.shape, ", "), fmt::join(shape, ", ")));
    return w;
  };
  // Staging: raw bytes and a bf16 matrix, sized for the largest tensor.
  size_t max_elems = static_cast<size_t>(e.vocab) * e.dim;
  max_elems = std::max(max_elems, static_cast<size_t>(2) * e.hidden * e.dim);
  max_elems = std::max(max_elems, static_cast<size_t>(e.qkv_dim) * e.dim);
  uint8_t* raw = nullptr;
  uint16_t *stage = nullptr, *stage2 = nullptr;
  int32_t* perm = nullptr;
  AO_CUDA_CHECK(cudaMalloc(&raw, max_elems * 4));
  AO_CUDA_CHECK(cudaMalloc(&stage, max_elems * 2));
  AO_CUDA_CHECK(cudaMalloc(&stage2, static_cast<size_t>(e.qkv_dim) * e.dim * 2));
  AO_CUDA_CHECK(cudaMalloc(&perm, static_cast<size_t>(e.qkv_dim) * 4));
  struct Freer {
    void* p[4];
    ~Freer() {
      for (void* q : p) cudaFree(q);
    }
  } freer{{raw, stage, stage2, perm}};
  // qkv rows are stored with each RoPE pair adjacent (rows 2i, 2i+1 of a head): the GEMV
  // epilogue then rotates pairs it owns. llama2.c's interleaved order already is that.
  std::vector<int32_t> qkv_order(e.qkv_dim);
  {
    std::vector<int32_t>& p = qkv_order;
    const int hd = e.hd;
    for (int r = 0; r < e.qkv_dim; ++r) {
      const int h = r / hd, j = r % hd, i = j / 2;
      p[r] = cfg.rope_interleaved ? r : h * hd + ((j & 1) ? i + hd / 2 : i);
    }
    AO_CUDA_CHECK(cudaMemcpyAsync(perm, p.data(), p.size() * 4, cudaMemcpyHostToDevice, e.stream));
  }
  std::vector<int32_t> gate_up_order(2 * static_cast<size_t>(e.hidden));
  for (int j = 0; j < e.hidden; ++j)
    gate_up_order[2 * j] = j, gate_up_order[2 * j + 1] = e.hidden + j;
  // Prequantized Linear weights (TorchAO checkpoints) keep their layout when every part of a
  // fused matrix has the same one; otherwise they are dequantized here and go the dense way.
  std::deque<std::vector<float>> dequantized;
  auto densify = [&](const HostWeight& w) -> HostWeight {
    if (!w.quantized) return w;
    dequantized.push_back(dequantize_prequantized(*w.quantized));
    return HostWeight{w.name, dequantized.back().data(), DType::f32, w.shape, nullptr};
  };
  auto prequantized = [&](const std::vector<const HostWeight*>& parts,
                          const std::vector<int32_t>& order, DeviceWeight* out) {
    std::vector<const PrequantizedWeight*> q;
    for (const HostWeight* p : parts) {
      if (!p->quantized) {
        for (const HostWeight* o : parts)
          if (o->quantized)
            warn("CudaEngine: {} is quantized but {} is not; both stored as {}", o->name, p->name,
                 cuda_weight_format_name(e.opt.format, e.opt.group_size));
        return false;
      }
      const PrequantizedWeight& a = *p->quantized;
      if (!q.empty() && (a.format != q[0]->format || a.group_size != q[0]->group_size)) {
        warn("CudaEngine: {} and {} have different quantized layouts; both stored as {}",
             parts[0]->name, p->name, cuda_weight_format_name(e.opt.format, e.opt.group_size));
        return false;
      }
      q.push_back(&a);
    }
    *out = e.upload_prequantized(stack_prequantized_rows(q, order));
    return true;
  };
  // Writes the rows of `w` (cols each) to dst, starting at row `row0`, every `step`-th row.
  auto put = [&](const HostWeight& w, int64_t row0, int64_t cols, uint16_t* dst, int64_t step = 1) {
    int64_t n = 1;
    for (auto d : w.shape) n *= d;
    AO_CHECK(!w.quantized, "CudaEngine: weight '{}' cannot be prequantized", w.name);
    const int code = dtype_code(w.dtype, w.name);
    AO_CUDA_CHECK(cudaStreamSynchronize(e.stream));
    AO_CUDA_CHECK(
        cudaMemcpyAsync(raw, w.data, n * dtype_bytes(w.dtype), cudaMemcpyHostToDevice, e.stream));
    cuda::convert_to_bf16(raw, code, dst + row0 * cols, n / cols, cols, cols * step, e.stream);
  };
  auto small = [&](const HostWeight& w) {
    int64_t n = 1;
    for (auto d : w.shape) n *= d;
    uint16_t* d = e.alloc<uint16_t>(n);
    put(w, 0, n, d);
    return d;
  };
  const int64_t D = e.dim, F = e.hidden, Hd = e.hd;
  const int64_t qn = int64_t(e.n_heads) * Hd, kvn = int64_t(e.n_kv) * Hd;
  const HostWeight& emb = get("model.embed_tokens.weight", {e.vocab, D});
  e.embed = e.alloc<uint16_t>(static_cast<size_t>(e.vocab) * D);
  put(emb, 0, D, e.embed);
  e.final_norm = small(get("model.norm.weight", {D}));
  for (int l = 0; l < e.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer& L = e.layers[l];
    L.attn_norm = small(get(p + "input_layernorm.weight", {D}));
    L.mlp_norm = small(get(p + "post_attention_layernorm.weight", {D}));
    dequantized.clear();
    const HostWeight& wq = get(p + "self_attn.q_proj.weight", {qn, D});
    const HostWeight& wk = get(p + "self_attn.k_proj.weight", {kvn, D});
    const HostWeight& wv = get(p + "self_attn.v_proj.weight", {kvn, D});
    if (!prequantized({&wq, &wk, &wv}, qkv_order, &L.qkv)) {
      put(densify(wq), 0, D, stage);
      put(densify(wk), qn, D, stage);
      put(densify(wv), qn + kvn, D, stage);
      cuda::gather_rows(stage, perm, qn + 2 * kvn, D, stage2, e.stream);
      L.qkv = e.make_weight(stage2, qn + 2 * kvn, D);
    }
    if (cfg.attention_bias) {
      L.qkv_bias = e.alloc<uint16_t>(qn + 2 * kvn);
      put(get(p + "self_attn.q_proj.bias", {qn}), 0, 1, L.qkv_bias);
      put(get(p + "self_attn.k_proj.bias", {kvn}), qn, 1, L.qkv_bias);
      put(get(p + "self_attn.v_proj.bias", {kvn}), qn + kvn, 1, L.qkv_bias);
    }
    const HostWeight& wo = get(p + "self_attn.o_proj.weight", {D, qn});
    if (!prequantized({&wo}, {}, &L.o)) {
      put(densify(wo), 0, qn, stage);
      L.o = e.make_weight(stage, D, qn);
    }
    // gate and up rows interleaved (2j = gate j, 2j + 1 = up j) for the fused SwiGLU epilogue.
    const HostWeight& wg = get(p + "mlp.gate_proj.weight", {F, D});
    const HostWeight& wu = get(p + "mlp.up_proj.weight", {F, D});
    if (!prequantized({&wg, &wu}, gate_up_order, &L.gate_up)) {
      put(densify(wg), 0, D, stage, 2);
      put(densify(wu), 1, D, stage, 2);
      L.gate_up = e.make_weight(stage, 2 * F, D);
    }
    const HostWeight& wd = get(p + "mlp.down_proj.weight", {D, F});
    if (!prequantized({&wd}, {}, &L.down)) {
      put(densify(wd), 0, F, stage);
      L.down = e.make_weight(stage, D, F);
    }
  }
  dequantized.clear();
  if (cfg.tie_embeddings || by_name.find("lm_head.weight") == by_name.end()) {
    e.lm_head = e.make_weight(e.embed, e.vocab, D);
  } else {
    const HostWeight& wl = get("lm_head.weight", {e.vocab, D});
    if (!prequantized({&wl}, {}, &e.lm_head)) {
      put(densify(wl), 0, D, stage);
      e.lm_head = e.make_weight(stage, e.vocab, D);
    }
  }
  AO_CUDA_CHECK(cudaStreamSynchronize(e.stream));
  if (e.int4_scales_rounded > 0)
    warn("CudaEngine: {} int4 groups had a scale or zero point that is not a bf16 value (an fp32 "
         "checkpoint); the engine stores both in bf16, rounded to nearest",
         e.int4_scales_rounded);
  e.finish_setup();
  return std::unique_ptr<CudaEngine>(new CudaEngine(std::move(impl)));
}

std::unique_ptr<CudaEngine> CudaEngine::create_synthetic(const io::ModelConfig& cfg,
                                                         const CudaEngineOptions& opt,
                                                         uint64_t seed) {
  auto impl = std::make_unique<Impl>();
  Impl& e = *impl;
  e.init(cfg, opt);
  const int64_t D = e.dim, F = e.hidden;
  const size_t max_elems =
      std::max({static_cast<size_t>(e.vocab) * D, static_cast<size_t>(2 * F * D),
                static_cast<size_t>(e.qkv_dim) * D});
  {
    // The weights and the staging buffer must fit what the device has free after the KV cache
    // and buffers (llama3-70b in bf16 is 139 GB, past an 80 GB card): say so before filling
    // any, rather than fail in the middle.
    const double per_weight = opt.format == CudaWeightFormat::bf16     ? 2.0
                              : opt.format == CudaWeightFormat::int4wo ? 0.5 + 4.0 / opt.group_size
                                                                       : 1.0 + 4.0 / D;
    const double qn = double(e.n_heads) * e.hd;
    const double linear = double(e.n_layers) * (double(e.qkv_dim) * D + D * qn + 3.0 * F * D) +
                          (cfg.tie_embeddings ? 0.0 : double(e.vocab) * D);
    // the embedding in bf16, and the bf16 staging buffer each weight is filled in
    const double need = linear * per_weight + 2.0 * double(e.vocab) * D + 2.0 * double(max_elems);
    size_t free_b = 0, total_b = 0;
    AO_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (need > 0.97 * double(free_b))
      throw Error(fmt::format(
          "synthetic model: {} weights need {:.1f} GiB but the device has {:.1f} GiB free (of "
          "{:.1f}); try a narrower format (int8wo, fp8-row, int4wo-g128) or a smaller shape",
          cuda_weight_format_name(opt.format, opt.group_size), need / (1 << 30),
          double(free_b) / (1 << 30), double(total_b) / (1 << 30)));
  }
  uint16_t* stage = e.alloc<uint16_t>(max_elems);  // freed below (or with e on an error)
  const float a = 0.02f * std::sqrt(3.f);
  auto random = [&](int64_t n, int64_t k) {
    cuda::fill_random_bf16(stage, n * k, a, seed++, e.stream);
    return e.make_weight(stage, n, k);
  };
  auto ones = [&](int64_t n) {
    uint16_t* d = e.alloc<uint16_t>(n);
    cuda::fill_bf16(d, n, 1.f, e.stream);
    return d;
  };
  e.embed = e.alloc<uint16_t>(static_cast<size_t>(e.vocab) * D);
  cuda::fill_random_bf16(e.embed, e.vocab * D, 1.f, seed++, e.stream);
  e.final_norm = ones(D);
  const int64_t qn = int64_t(e.n_heads) * e.hd;
  for (auto& L : e.layers) {
    L.attn_norm = ones(D);
    L.mlp_norm = ones(D);
    L.qkv = random(e.qkv_dim, D);
    L.o = random(D, qn);
    L.gate_up = random(2 * F, D);
    L.down = random(D, F);
    if (cfg.attention_bias) {  // Qwen2's q/k/v bias, added in the qkv GEMV's RoPE epilogue
      L.qkv_bias = e.alloc<uint16_t>(e.qkv_dim);
      cuda::fill_random_bf16(L.qkv_bias, e.qkv_dim, a, seed++, e.stream);
    }
  }
  e.lm_head = cfg.tie_embeddings ? e.make_weight(e.embed, e.vocab, D) : random(e.vocab, D);
  AO_CUDA_CHECK(cudaStreamSynchronize(e.stream));
  e.release(stage);
  e.finish_setup();
  return std::unique_ptr<CudaEngine>(new CudaEngine(std::move(impl)));
}

io::ModelConfig CudaEngine::synthetic_config(const std::string& name) {
  io::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.max_seq_len = 8192;
  c.norm_eps = 1e-5f;
  if (name == "llama3-8b") {
    c.dim = 4096, c.hidden_dim = 14336, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 8;
    c.vocab_size = 128256, c.rope_theta = 500000.f;
  } else if (name == "llama2-7b") {
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32;
    c.vocab_size = 32000, c.rope_theta = 10000.f, c.max_seq_len = 4096;
  } else if (name == "llama3-1b") {
    c.dim = 2048, c.hidden_dim = 8192, c.n_layers = 16, c.n_heads = 32, c.n_kv_heads = 8;
    c.vocab_size = 128256, c.rope_theta = 500000.f, c.tie_embeddings = true;
  } else if (name == "llama3-70b") {  // 37 GB in int4 g128, 71 in int8 / fp8, 141 in bf16
    c.dim = 8192, c.hidden_dim = 28672, c.n_layers = 80, c.n_heads = 64, c.n_kv_heads = 8;
    c.vocab_size = 128256, c.rope_theta = 500000.f;
  } else if (name == "qwen2.5-7b") {  // K = 3584 and 18944: rows of 2^k times an odd factor
    c.architecture = "Qwen2ForCausalLM";
    c.dim = 3584, c.hidden_dim = 18944, c.n_layers = 28, c.n_heads = 28, c.n_kv_heads = 4;
    c.vocab_size = 152064, c.rope_theta = 1000000.f, c.attention_bias = true, c.norm_eps = 1e-6f;
  } else {
    // Other names may be valid elsewhere (the CPU bench knows more shapes).
    throw NotSupported("synthetic model '" + name +
                       "' on CUDA (available: llama3-8b, llama2-7b, llama3-1b, qwen2.5-7b, "
                       "llama3-70b)");
  }
  c.head_dim = c.dim / c.n_heads;
  c.torch_dtype = "bfloat16";
  return c;
}

// ---- running -------------------------------------------------------------------------------

std::vector<float> CudaEngine::prefill(const std::vector<int32_t>& tokens) {
  impl_->prefill_tokens(tokens);
  return impl_->read_logits();
}

void CudaEngine::prefill_all_logits(const std::vector<int32_t>& tokens, float* logits) {
  Impl& e = *impl_;
  const size_t row = static_cast<size_t>(e.vocab);
  // Each chunk's rows are copied out before the next chunk runs (set_pos synchronizes).
  e.prefill_tokens(tokens, [&](size_t offset, int m) {
    e.enqueue_all_logits(m);
    AO_CUDA_CHECK(cudaMemcpyAsync(logits + offset * row, e.all_logits, m * row * sizeof(float),
                                  cudaMemcpyDeviceToHost, e.stream));
  });
}

std::vector<float> CudaEngine::decode(int32_t token) {
  Impl& e = *impl_;
  AO_CHECK(token >= 0 && token < e.vocab, "CudaEngine::decode: token {} outside the vocabulary",
           token);
  e.check_room(1);
  AO_CUDA_CHECK(cudaStreamSynchronize(e.stream));
  e.h_pinned[1] = token;
  AO_CUDA_CHECK(cudaMemcpyAsync(e.d_token, &e.h_pinned[1], 4, cudaMemcpyHostToDevice, e.stream));
  e.run_decode_step();
  ++e.host_pos;
  return e.read_logits();
}

std::vector<int32_t> CudaEngine::generate(const std::vector<int32_t>& prompt, int n,
                                          const SamplingParams& sp,
                                          const std::function<bool(int32_t)>& on_token) {
  Impl& e = *impl_;
  std::vector<int32_t> out;
  if (n <= 0) return out;
  constexpr int kMaxGenerate = 4096;  // the pinned token buffer
  e.check_room(static_cast<int>(prompt.size()) + n - 1);
  e.set_sampler(sp);
  e.prefill_tokens(prompt);
  cuda::sample(e.logits, e.vocab, e.d_sampler, e.d_token, e.d_out, Impl::kOutCap, e.d_n_out,
               e.d_pos, 0, e.stream);
  // Steps run in batches; the tokens of one batch are copied back while the next one runs.
  constexpr int kBatch = 8;
  int32_t* host = &e.h_pinned[16];
  cudaEvent_t ev[2];
  AO_CUDA_CHECK(cudaEventCreateWithFlags(&ev[0], cudaEventDisableTiming));
  AO_CUDA_CHECK(cudaEventCreateWithFlags(&ev[1], cudaEventDisableTiming));
  int enqueued = 1;  // tokens whose sampling is enqueued
  int delivered = 0;
  int copied_upto[2] = {0, 0};
  bool stop = false;
  auto enqueue_copy = [&](int from, int to, int slot) {
    AO_CUDA_CHECK(cudaMemcpyAsync(host + from, e.d_out + from, (to - from) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, e.stream));
    AO_CUDA_CHECK(cudaEventRecord(ev[slot], e.stream));
    copied_upto[slot] = to;
  };
  AO_CHECK(n <= kMaxGenerate, "CudaEngine::generate: at most {} tokens per call (asked for {})",
           kMaxGenerate, n);
  const int cap = n;
  enqueue_copy(0, 1, 0);
  int pending_slot = 0;
  bool pending = true;
  while (pending) {
    // Enqueue the next batch before waiting for the previous one.
    bool next = false;
    int next_slot = 1 - pending_slot;
    if (!stop && enqueued < cap) {
      const int from = enqueued;
      const int steps = std::min(kBatch, cap - enqueued);
      for (int i = 0; i < steps; ++i) e.run_decode_step();
      enqueued += steps;
      e.host_pos += steps;
      enqueue_copy(from, enqueued, next_slot);
      next = true;
    }
    AO_CUDA_CHECK(cudaEventSynchronize(ev[pending_slot]));
    for (; delivered < copied_upto[pending_slot] && !stop; ++delivered) {
      out.push_back(host[delivered]);
      if (on_token && !on_token(host[delivered])) stop = true;
    }
    pending = next;
    pending_slot = next_slot;
  }
  AO_CUDA_CHECK(cudaStreamSynchronize(e.stream));
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  // The cache now holds the prompt and every sampled token but the last (host_pos advanced
  // with each enqueued step; the device advanced *d_pos itself).
  return out;
}

CudaBenchResult CudaEngine::bench(int pp, int tg, int reps) {
  Impl& e = *impl_;
  AO_CHECK(pp >= 0 && tg >= 0 && pp + tg <= e.max_seq,
           "CudaEngine::bench: pp {} + tg {} exceeds the KV-cache capacity {}", pp, tg, e.max_seq);
  CudaBenchResult r;
  r.format = cuda_weight_format_name(e.opt.format, e.opt.group_size);
  r.device = cuda_device_name();
  r.params = e.linear_params();
  r.weight_gb = e.weight_bytes() / 1e9;
  r.pp = pp;
  r.tg = tg;
  cudaEvent_t t0, t1;
  AO_CUDA_CHECK(cudaEventCreate(&t0));
  AO_CUDA_CHECK(cudaEventCreate(&t1));
  std::mt19937 rng(42);
  std::vector<float> times;
  if (pp > 0) {
    for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms up
      std::vector<int32_t> toks(pp);
      for (auto& t : toks) t = static_cast<int32_t>(rng() % e.vocab);
      e.set_pos(0);
      // Upload outside the timed region; chunks of max_m as prefill() does.
      AO_CUDA_CHECK(cudaEventRecord(t0, e.stream));
      for (int off = 0; off < pp; off += e.max_m) {
        const int m = std::min(e.max_m, pp - off);
        AO_CUDA_CHECK(cudaMemcpyAsync(e.d_tokens, toks.data() + off, m * 4, cudaMemcpyHostToDevice,
                                      e.stream));
        e.enqueue_prefill(m);
        // Position advance on the device without a host round trip.
        e.h_pinned[2 + (off / e.max_m) % 8] = off + m;
        AO_CUDA_CHECK(cudaMemcpyAsync(e.d_pos, &e.h_pinned[2 + (off / e.max_m) % 8], 4,
                                      cudaMemcpyHostToDevice, e.stream));
      }
      AO_CUDA_CHECK(cudaEventRecord(t1, e.stream));
      AO_CUDA_CHECK(cudaEventSynchronize(t1));
      float ms = 0;
      AO_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
      if (rep > 0) times.push_back(ms);
    }
    const double s = median(times) / 1e3;
    r.pp_tok_s = pp / s;
    r.pp_tflops = e.prefill_flops(pp) / s / 1e12;
  }
  if (tg > 0) {
    times.clear();
    e.set_sampler(SamplingParams{});
    for (int rep = 0; rep <= reps; ++rep) {
      e.set_pos(0);
      AO_CUDA_CHECK(cudaEventRecord(t0, e.stream));
      for (int i = 0; i < tg; ++i) e.run_decode_step();
      AO_CUDA_CHECK(cudaEventRecord(t1, e.stream));
      AO_CUDA_CHECK(cudaEventSynchronize(t1));
      float ms = 0;
      AO_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
      if (rep > 0) times.push_back(ms);
    }
    const double s = median(times) / 1e3;
    r.tg_tok_s = tg / s;
    r.tg_gb_s = r.weight_gb * r.tg_tok_s;
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  e.set_pos(0);
  return r;
}

// ---- free functions -------------------------------------------------------------------------

CudaBenchResult cuda_bench(const std::string& model, const std::string& format, int pp, int tg,
                           int reps, int ubatch) {
  AO_CHECK(ubatch >= 1, "cuda_bench: ubatch must be at least 1, got {}", ubatch);
  CudaEngineOptions opt;
  opt.format = parse_cuda_weight_format(format, &opt.group_size);
  opt.max_seq_len = std::max(pp + tg, 16);
  opt.max_prefill = std::max(std::min(pp, ubatch), 1);
  auto eng = CudaEngine::create_synthetic(CudaEngine::synthetic_config(model), opt);
  CudaBenchResult r = eng->bench(pp, tg, reps);
  r.model = model;
  return r;
}

std::string cuda_device_name() {
  int dev = 0;
  AO_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  AO_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

namespace {
// Median over 10 timed runs of fn (after 2 untimed ones), in ms, with CUDA events on the
// legacy default stream.
template <typename Fn>
float median_event_ms(Fn&& fn) {
  cudaEvent_t t0, t1;
  AO_CUDA_CHECK(cudaEventCreate(&t0));
  AO_CUDA_CHECK(cudaEventCreate(&t1));
  std::vector<float> times;
  for (int i = 0; i < 12; ++i) {
    AO_CUDA_CHECK(cudaEventRecord(t0));
    fn();
    AO_CUDA_CHECK(cudaEventRecord(t1));
    AO_CUDA_CHECK(cudaEventSynchronize(t1));
    float ms = 0;
    AO_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    if (i >= 2) times.push_back(ms);
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  return median(times);
}
}  // namespace

double cuda_copy_bandwidth_gb_s(size_t bytes) {
  void *a = nullptr, *b = nullptr;
  AO_CUDA_CHECK(cudaMalloc(&a, bytes));
  AO_CUDA_CHECK(cudaMalloc(&b, bytes));
  AO_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const float ms = median_event_ms(
      [&] { AO_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms / 1e3) / 1e9;
}

double cuda_gemm_tflops(int m, int n, int k) {
  cublasHandle_t h;
  AO_CUBLAS_CHECK(cublasCreate(&h));
  void *a, *b, *c;
  AO_CUDA_CHECK(cudaMalloc(&a, size_t(m) * k * 2));
  AO_CUDA_CHECK(cudaMalloc(&b, size_t(n) * k * 2));
  AO_CUDA_CHECK(cudaMalloc(&c, size_t(m) * n * 2));
  cuda::fill_random_bf16(static_cast<uint16_t*>(a), int64_t(m) * k, 1.f, 1, nullptr);
  cuda::fill_random_bf16(static_cast<uint16_t*>(b), int64_t(n) * k, 1.f, 2, nullptr);
  const float alpha = 1.f, beta = 0.f;
  const float ms = median_event_ms([&] {
    AO_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a,
                                 CUDA_R_16BF, k, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  });
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cublasDestroy(h);
  return 2.0 * m * n * k / (ms / 1e3) / 1e12;
}

}  // namespace ao::runtime

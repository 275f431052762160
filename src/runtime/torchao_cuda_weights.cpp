// TorchAO quantized weights -> CudaEngine layouts, and a model's HostWeight list (host only; see
// include/ao/runtime/cuda_weights.h). Built in every configuration so it is tested without a GPU.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/io/model_files.h"
#include "ao/quant/checkpoint.h"
#include "ao/quant/quantized_tensors.h"
#include "ao/runtime/cuda_weights.h"

namespace ao::runtime {

namespace {

bool engine_int4_group(int64_t g) { return g == 32 || g == 64 || g == 128 || g == 256; }

Tensor f32c(const Tensor& t) { return t.contiguous().to(DType::f32).contiguous(); }

// Int8Tensor / IntxUnpackedToInt8Tensor: w = (q - zp) * scale per (row, group).
std::optional<PrequantizedWeight> map_affine_int8(const quant::AffineInt8Tensor& a,
                                                  std::string* why) {
  const int64_t N = a.out_features(), K = a.in_features(), g = a.group_size(), groups = K / g;
  const Tensor q = a.data("qdata").contiguous();
  const Tensor s = f32c(a.data("scale"));
  const Tensor z = a.data("zero_point").contiguous();
  AO_CHECK(q.dtype() == DType::i8 && z.dtype() == DType::i8 && q.numel() == N * K &&
               s.numel() == N * groups && z.numel() == N * groups,
           "{}: unexpected data layout", a.type_name());
  const int8_t* qd = q.data<int8_t>();
  const int8_t* zd = z.data<int8_t>();
  const float* sd = s.data<float>();
  PrequantizedWeight w;
  w.n = N, w.k = K, w.source = a.type_name();
  if (g == K && std::all_of(zd, zd + N, [](int8_t v) { return v == 0; })) {
    w.format = CudaWeightFormat::int8wo;
    w.data.assign(reinterpret_cast<const uint8_t*>(qd), reinterpret_cast<const uint8_t*>(qd) + N * K);
    w.scale.assign(sd, sd + N);
    return w;
  }
  if (engine_int4_group(g) && K % 2 == 0 &&
      std::all_of(qd, qd + N * K, [](int8_t v) { return v >= -8 && v <= 7; })) {
    // u = q + 8 in [0, 15]; w = (u - 8 - zp) s = (u - 8) s + zero with zero = -zp s.
    w.format = CudaWeightFormat::int4wo;
    w.group_size = static_cast<int>(g);
    w.data.assign(static_cast<size_t>(N * K / 2), 0);
    w.scale.resize(static_cast<size_t>(N * groups * 2));
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        const uint8_t u = static_cast<uint8_t>(qd[n * K + k] + 8);
        w.data[n * (K / 2) + k / 2] |= (k % 2 == 0) ? u : static_cast<uint8_t>(u << 4);
      }
      for (int64_t gi = 0; gi < groups; ++gi) {
        const float sc = sd[n * groups + gi];
        w.scale[(n * groups + gi) * 2] = sc;
        w.scale[(n * groups + gi) * 2 + 1] = -static_cast<float>(zd[n * groups + gi]) * sc;
      }
    }
    return w;
  }
  *why = g == K ? "per-row int8 with non-zero zero points"
                : fmt::format("int8 storage with group size {} and values outside int4", g);
  return std::nullopt;
}

// Int4Tensor: signed nibbles v (element 2i low), scale / zero_point [K/g, N]: w = v s + z.
std::optional<PrequantizedWeight> map_int4(const quant::Int4Tensor& a, std::string* why) {
  const int64_t N = a.out_features(), K = a.in_features(), g = a.group_size();
  if (!engine_int4_group(g) || K % g != 0) {
    *why = fmt::format("int4 group size {} (engine: 32, 64, 128 or 256 dividing K = {})", g, K);
    return std::nullopt;
  }
  const int64_t groups = K / g;
  const Tensor q = a.data("qdata").contiguous();
  const Tensor s = f32c(a.data("scale")), z = f32c(a.data("zero_point"));
  AO_CHECK(q.numel() == N * K / 2 && s.numel() == groups * N && z.numel() == groups * N,
           "Int4Tensor: unexpected data layout");
  const auto* qd = static_cast<const uint8_t*>(q.data_ptr());
  PrequantizedWeight w;
  w.format = CudaWeightFormat::int4wo;
  w.group_size = static_cast<int>(g);
  w.n = N, w.k = K, w.source = a.type_name();
  // u = v + 8 = nibble ^ 8 (two's complement nibble), both nibbles of a byte at once.
  w.data.resize(static_cast<size_t>(N * K / 2));
  for (size_t i = 0; i < w.data.size(); ++i) w.data[i] = qd[i] ^ 0x88;
  w.scale.resize(static_cast<size_t>(N * groups * 2));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float sc = s.data<float>()[gi * N + n], zero = z.data<float>()[gi * N + n];
      w.scale[(n * groups + gi) * 2] = sc;
      w.scale[(n * groups + gi) * 2 + 1] = zero;
    }
  return w;
}

// Int4TilePackedTo4dTensor: scale_and_zero bf16 [Kp/g, Np, 2]; w = (u - 8) s + z. The tile
// packing is undone through dequantize(): u = round((w - z) / s) + 8, exact because w - z is
// (u - 8) s up to one rounding of w, far below s/2 (checked by the host tests).
std::optional<PrequantizedWeight> map_int4_tile(const quant::Int4TilePackedTo4dTensor& a,
                                                std::string* why) {
  const int64_t N = a.out_features(), K = a.in_features();
  const auto& bs = a.attributes()["block_size"];
  const int64_t g = bs.is_array() && bs.size() == 2 ? bs[1].get<int64_t>() : 0;
  if (!engine_int4_group(g) || K % 2 != 0) {
    *why = fmt::format("tile-packed int4 with group size {} and K = {}", g, K);
    return std::nullopt;
  }
  const Tensor sz = f32c(a.data("scale_and_zero"));
  const int64_t Np = sz.size(1), groups = (K + g - 1) / g;
  AO_CHECK(sz.dim() == 3 && sz.size(0) >= groups && Np >= N && sz.size(2) == 2,
           "Int4TilePackedTo4dTensor: unexpected scale_and_zero shape");
  const Tensor deq = f32c(a.dequantize());
  const float* d = deq.data<float>();
  const float* szd = sz.data<float>();
  PrequantizedWeight w;
  w.format = CudaWeightFormat::int4wo;
  w.group_size = static_cast<int>(g);
  w.n = N, w.k = K, w.source = a.type_name();
  w.data.assign(static_cast<size_t>(N * K / 2), 0);
  w.scale.resize(static_cast<size_t>(N * groups * 2));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float sc = szd[(gi * Np + n) * 2], zero = szd[(gi * Np + n) * 2 + 1];
      w.scale[(n * groups + gi) * 2] = sc;
      w.scale[(n * groups + gi) * 2 + 1] = zero;
      for (int64_t k = gi * g; k < std::min(K, (gi + 1) * g); ++k) {
        float u = 8.f;
        if (sc != 0.f && std::isfinite(sc)) u = std::nearbyint((d[n * K + k] - zero) / sc) + 8.f;
        const uint8_t ub = static_cast<uint8_t>(std::clamp(u, 0.f, 15.f));
        w.data[n * (K / 2) + k / 2] |= (k % 2 == 0) ? ub : static_cast<uint8_t>(ub << 4);
      }
    }
  }
  return w;
}

// Float8Tensor: e4m3fn qdata [N, K], scale [N] (per row) or one value (per tensor). With fp8
// activations of the same granularity (TorchAO allows no other pairing) it maps to fp8dq.
std::optional<PrequantizedWeight> map_float8(const quant::Float8Tensor& a, std::string* why) {
  const int64_t N = a.out_features(), K = a.in_features();
  const Tensor q = a.data("qdata").contiguous();
  const Tensor s = f32c(a.data("scale"));
  if (dtype_size(q.dtype()) != 1 || q.numel() != N * K || (s.numel() != N && s.numel() != 1)) {
    *why = "Float8Tensor with a block size other than per row / per tensor";
    return std::nullopt;
  }
  PrequantizedWeight w;
  const bool per_tensor = s.numel() == 1 && N != 1;
  const quant::ActivationQuant act = a.activation_quant();
  if (act == quant::ActivationQuant::float8_per_tensor && (per_tensor || N == 1))
    w.format = CudaWeightFormat::fp8dq_tensor;
  else if (act == quant::ActivationQuant::float8_per_row && !per_tensor)
    w.format = CudaWeightFormat::fp8dq_row;
  else
    w.format = per_tensor ? CudaWeightFormat::fp8_tensor : CudaWeightFormat::fp8_row;
  w.n = N, w.k = K, w.source = a.type_name();
  const auto* qd = static_cast<const uint8_t*>(q.data_ptr());
  w.data.assign(qd, qd + N * K);
  w.scale.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) w.scale[n] = s.data<float>()[per_tensor ? 0 : n];
  return w;
}

}  // namespace

std::optional<PrequantizedWeight> map_qtensor_for_cuda(const quant::QTensor& q, std::string* why,
                                                       bool* activation_dropped) {
  std::string reason;
  if (!why) why = &reason;
  if (activation_dropped) *activation_dropped = false;
  std::optional<PrequantizedWeight> w;
  if (const auto* a = dynamic_cast<const quant::AffineInt8Tensor*>(&q))
    w = map_affine_int8(*a, why);
  else if (const auto* a4 = dynamic_cast<const quant::Int4Tensor*>(&q))
    w = map_int4(*a4, why);
  else if (const auto* t4 = dynamic_cast<const quant::Int4TilePackedTo4dTensor*>(&q))
    w = map_int4_tile(*t4, why);
  else if (const auto* f8 = dynamic_cast<const quant::Float8Tensor*>(&q))
    w = map_float8(*f8, why);
  else
    *why = "no CUDA kernel for this type";
  if (w && activation_dropped)
    *activation_dropped = q.quantizes_activation() && !fp8_dynamic_activation(w->format);
  return w;
}

// ---- whole model ---------------------------------------------------------------------------

struct CudaModelWeights::Storage {
  io::ModelFiles files;                 // the mapping behind zero-copy dense tensors
  std::vector<Tensor> tensors;          // converted / dequantized tensors
  std::deque<PrequantizedWeight> quantized;
};

CudaModelWeights cuda_model_weights(const io::ModelFiles& files_in) {
  CudaModelWeights out;
  out.storage = std::make_shared<CudaModelWeights::Storage>();
  auto& st = *out.storage;
  st.files = files_in;
  const io::ModelFiles& files = st.files;
  AO_CHECK(files.config.has_value(),
           "{}: no config.json next to the weights (the CUDA engine needs the model config)",
           files.path);
  out.config = *files.config;
  const auto& arch = out.config.architecture;
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM" && arch != "Qwen2ForCausalLM" &&
      arch != "llama2.c")
    throw NotSupported(fmt::format("architecture {} on cuda (the CUDA engine runs Llama, "
                                   "Mistral, Qwen2 and llama2.c models)",
                                   arch));

  auto add_dense = [&](const std::string& name, Tensor t) {
    if (!(t.dtype() == DType::f32 || t.dtype() == DType::bf16 || t.dtype() == DType::f16))
      t = t.to(DType::f32);
    if (!t.is_contiguous()) t = t.contiguous();
    st.tensors.push_back(t);
    out.weights.push_back(HostWeight{name, t.data_ptr(), t.dtype(), t.shape(), nullptr});
  };

  out.torchao = quant::is_torchao_checkpoint(files);
  if (!out.torchao) {
    for (const auto& nt : files.tensors) add_dense(nt.name, nt.tensor);
    return out;
  }
  const quant::QuantizedWeights q = quant::load_quantized_weights(files);
  for (const auto& nt : q.dense) add_dense(nt.name, nt.tensor);
  struct Count {
    int n = 0;
    std::string note;
  };
  std::map<std::string, Count> counts;  // "Int4Tensor -> int4wo-g32"
  for (const auto& [fqn, qt] : q.linears) {
    const std::string name = fqn + ".weight";
    std::string why;
    bool act = false;
    // The embedding is looked up, not multiplied: the engine keeps it dense.
    auto mapped = fqn.ends_with("embed_tokens") ? std::nullopt : map_qtensor_for_cuda(*qt, &why, &act);
    if (fqn.ends_with("embed_tokens")) why = "embedding (kept dense)";
    if (mapped) {
      st.quantized.push_back(std::move(*mapped));
      const PrequantizedWeight& p = st.quantized.back();
      out.weights.push_back(HostWeight{name, nullptr, DType::f32, {p.n, p.k}, &p});
      const std::string label = cuda_weight_format_name(p.format, p.group_size);
      out.format_of[name] = label;
      auto& c = counts[qt->type_name() + " -> " + label];
      ++c.n;
      if (act) c.note = " (activation quantization dropped: runs weight-only)";
    } else {
      add_dense(name, qt->dequantize());
      out.format_of[name] = "dequantized";
      auto& c = counts[qt->type_name() + " -> dequantized"];
      ++c.n;
      c.note = " (" + why + ")";
    }
  }
  for (const auto& [k, c] : counts) {
    out.mapping.push_back(fmt::format("{}: {} weight{}{}", k, c.n, c.n == 1 ? "" : "s", c.note));
    if (k.ends_with("dequantized") || !c.note.empty())
      AO_WARN("cuda: {}: {} weight{}{}", k, c.n, c.n == 1 ? "" : "s", c.note);
  }
  return out;
}

}  // namespace ao::runtime

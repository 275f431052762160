// ao qinfo PATH — load a TorchAO-quantized checkpoint through the quantized tensor types
// (validating metadata against tensors), print each weight, optionally dump the
// dequantized weights (for interop checks against TorchAO's own dequantize()).
#include <fmt/format.h>

#include "ao/io/model_files.h"
#include "ao/quant/checkpoint.h"
#include "command.h"

namespace ao::cli {
namespace {

struct QinfoArgs {
  std::string path, dump;
  std::string linear_input;
};

int run_qinfo(const QinfoArgs& a) {
  const io::ModelFiles m = io::open_model_files(a.path);
  const quant::QuantizedWeights w = quant::load_quantized_weights(m);
  fmt::print("# {}\n\n", a.path);
  if (!w.quantization_config.is_null())
    fmt::print("quantization_config: {}\n\n", w.quantization_config.dump());
  fmt::print("| module | type | bits/weight | bytes |\n|---|---|---:|---:|\n");
  size_t qbytes = 0;
  for (const auto& [fqn, q] : w.linears) {
    fmt::print("| {} | {} | {:.2f} | {} |\n", fqn, q->str(), q->bits_per_weight(), q->nbytes());
    qbytes += q->nbytes();
  }
  size_t dbytes = 0;
  for (const auto& d : w.dense) dbytes += d.tensor.nbytes();
  fmt::print("\nquantized weights: {} ({} bytes), dense tensors: {} ({} bytes)\n", w.linears.size(),
             qbytes, w.dense.size(), dbytes);
  if (!a.dump.empty()) {
    std::vector<io::NamedTensor> out;
    for (const auto& [fqn, q] : w.linears) {
      out.push_back({fqn + ".weight", q->dequantize()});
      // linear() on a fixed input: checks the kernels (and dynamic activation quantization)
      // against TorchAO's F.linear on the same weight.
      const int64_t K = q->in_features(), N = q->out_features();
      for (int64_t M : {int64_t(1), int64_t(16)}) {
        Tensor x = Tensor::empty({M, K}, DType::f32);
        for (int64_t i = 0; i < M * K; ++i)
          x.data<float>()[i] = std::sin(0.37f * static_cast<float>(i) + 0.1f);
        Tensor y = Tensor::empty({M, N}, DType::f32);
        q->linear(x.data<float>(), M, y.data<float>());
        out.push_back({fmt::format("{}.linear_m{}", fqn, M), y});
        out.push_back({fmt::format("{}.x_m{}", fqn, M), x});
      }
    }
    io::save_safetensors(a.dump, out);
    fmt::print("dequantized weights and linear outputs written to {}\n", a.dump);
  }
  return 0;
}

const bool registered = register_command(
    {"qinfo", "Load a TorchAO-quantized checkpoint, validate it and list its quantized weights", 41,
     [](CLI::App* sub) -> RunFn {
       auto a = std::make_shared<QinfoArgs>();
       sub->add_option("PATH", a->path, "quantized HF folder or .safetensors")->required();
       sub->add_option(
           "--dump", a->dump,
           "write <module>.weight (dequantized f32), <module>.x_m{1,16} (x[i] = sin(0.37 i + 0.1)) "
           "and <module>.linear_m{1,16} (linear of x) to this .safetensors file");
       return [a] { return run_qinfo(*a); };
     }});

}  // namespace
}  // namespace ao::cli

// CudaEngine::create from ao::Tensor weights (HF names): a thin adapter over create_from_host.
#include "ao/core/tensor.h"
#include "ao/io/safetensors.h"
#include "ao/runtime/cuda_engine.h"

namespace ao::runtime {

std::unique_ptr<CudaEngine> CudaEngine::create(const io::ModelConfig& config,
                                               const std::vector<io::NamedTensor>& weights,
                                               const CudaEngineOptions& options) {
  std::vector<Tensor> keep;  // contiguous copies of strided inputs
  std::vector<HostWeight> host;
  host.reserve(weights.size());
  for (const auto& nt : weights) {
    Tensor t = nt.tensor;
    AO_CHECK(t.device().is_cpu(), "CudaEngine: weight '{}' must be a CPU tensor", nt.name);
    if (!t.is_contiguous()) {
      keep.push_back(t.contiguous());
      t = keep.back();
    }
    host.push_back(HostWeight{nt.name, t.data_ptr(), t.dtype(), t.shape()});
  }
  return create_from_host(config, host, options);
}

}  // namespace ao::runtime

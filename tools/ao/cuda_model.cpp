// load_cuda_model: what `ao generate` and `ao perplexity` share for --device cuda.
#include "cuda_model.h"

#ifdef AO_WITH_CUDA

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "ao/core/error.h"

bool ao_cuda_available();  // src/core/device_cuda.cu

namespace ao::cli {

CudaModel load_cuda_model(const CudaModelRequest& r) {
  AO_CHECK(ao_cuda_available(), "{} --device cuda: no CUDA GPU is visible", r.command);
  CudaModel m;
  m.files = io::open_model_files(r.model);
  m.weights = runtime::cuda_model_weights(m.files);
  const io::ModelConfig& c = m.weights.config;
  const std::string tok_path = r.tokenizer.empty() ? m.files.tokenizer_path : r.tokenizer;
  AO_CHECK(!tok_path.empty(),
           "{}: no tokenizer found next to the model (tokenizer.json, tokenizer.model, tok*.bin); "
           "pass one with --tokenizer",
           m.files.path);
  m.tokenizer = text::load_tokenizer(tok_path);
  text::check_tokenizer_fits_model(*m.tokenizer, c.vocab_size, tok_path);

  m.options.format = runtime::parse_cuda_weight_format(r.cuda_format, &m.options.group_size);
  const int64_t model_max = c.max_seq_len > 0 ? c.max_seq_len : 4096;
  const int64_t ctx = r.ctx > 0 ? std::min(r.ctx, model_max) : std::min<int64_t>(model_max, 4096);
  if (c.sliding_window && ctx > *c.sliding_window)
    throw NotSupported(fmt::format(
        "sliding-window attention on cuda: context {} exceeds the window {}; use a context of "
        "at most {} (-c / --ctx)",
        ctx, *c.sliding_window, *c.sliding_window));
  m.options.max_seq_len = static_cast<int>(ctx);
  m.options.cuda_graph = r.cuda_graph;
  m.engine = runtime::CudaEngine::create_from_host(c, m.weights.weights, m.options);
  return m;
}

std::string CudaModel::description() const {
  return fmt::format("cuda {}, {}", runtime::cuda_device_name(),
                     weights.torchao
                         ? "TorchAO checkpoint"
                         : runtime::cuda_weight_format_name(options.format, options.group_size));
}

void CudaModel::print_weight_mapping() const {
  for (const auto& line : weights.mapping) fmt::print(stderr, "weights: {}\n", line);
}

}  // namespace ao::cli

#endif  // AO_WITH_CUDA

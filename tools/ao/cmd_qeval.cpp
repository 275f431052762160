// ao qeval MODEL --text FILE [--base BASE] — what quantization costs: perplexity on a text,
// KL divergence of the next-token distributions against a base model, and decode speed.
// MODEL may be a TorchAO-quantized folder (loaded through ao::quant) or anything
// load_model opens. Scoring follows the project's reference recipe (shared/data/README):
// the first --chars characters, split on blank lines into paragraphs, each encoded and
// followed by token 13 (newline), scored in non-overlapping windows of --window tokens each
// preceded by BOS.
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ao/core/log.h"
#include "ao/core/parallel.h"
#include "ao/models/registry.h"
#include "ao/quant/checkpoint.h"
#include "ao/text/tokenizer.h"
#include "command.h"

namespace ao::cli {
namespace {

struct QevalArgs {
  std::string model, base, text;
  int64_t chars = 100000, window = 255, decode_tokens = 256;
  int threads = 0;
  bool json = false;
};

struct Loaded {
  std::unique_ptr<models::CausalLM> model;
  std::string tokenizer_path;
  int64_t file_bytes = 0;
};

Loaded load_any(const std::string& path) {
  io::ModelFiles files = io::open_model_files(path);
  Loaded l{nullptr, files.tokenizer_path, files.file_bytes};
  if (quant::is_torchao_checkpoint(files)) {
    quant::QuantizedWeights q = quant::load_quantized_weights(files);
    l.model = models::build_model(*files.config, q.builder_tensors(), {}, path);
    for (const auto& [fqn, w] : q.linears) l.model->set_weight(fqn, w);
  } else {
    l.model = models::load_model(path).model;
  }
  return l;
}

std::vector<int32_t> tokenize_paragraphs(const text::Tokenizer& tok, const std::string& path,
                                         int64_t chars) {
  std::ifstream f(path, std::ios::binary);
  AO_CHECK(f.good(), "{}: cannot open the evaluation text", path);
  std::string s((std::istreambuf_iterator<char>(f)), {});
  if (chars > 0 && static_cast<int64_t>(s.size()) > chars) s.resize(static_cast<size_t>(chars));
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find("\n\n", pos);
    if (end == std::string::npos) end = s.size();
    std::string para = s.substr(pos, end - pos);
    while (!para.empty() && std::isspace(static_cast<unsigned char>(para.back()))) para.pop_back();
    size_t b = 0;
    while (b < para.size() && std::isspace(static_cast<unsigned char>(para[b]))) ++b;
    para = para.substr(b);
    if (!para.empty()) {
      const auto t = tok.encode(para, false);
      ids.insert(ids.end(), t.begin(), t.end());
      ids.push_back(13);
    }
    pos = end + 2;
  }
  return ids;
}

// log-softmax of one row into out.
void log_softmax(const float* x, int64_t n, std::vector<double>& out) {
  double mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double(x[i]));
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) - mx);
  const double lz = mx + std::log(z);
  out.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = double(x[i]) - lz;
}

int run_qeval(const QevalArgs& a) {
  if (a.threads > 0) set_num_threads(a.threads);
  Loaded m = load_any(a.model);
  Loaded base;
  if (!a.base.empty()) base = load_any(a.base);
  AO_CHECK(!m.tokenizer_path.empty(), "{}: no tokenizer found next to the model", a.model);
  const auto tok = text::load_tokenizer(m.tokenizer_path);
  const std::vector<int32_t> ids = tokenize_paragraphs(*tok, a.text, a.chars);
  const int64_t V = m.model->vocab_size();
  AO_CHECK(a.window >= 1 && a.window < m.model->context_size(), "--window must be in [1, {})",
           m.model->context_size());
  double nll = 0, nll2 = 0, kl = 0;
  int64_t count = 0;
  std::vector<float> logits, blogits;
  std::vector<double> lp, blp;
  for (size_t start = 0; start < ids.size(); start += static_cast<size_t>(a.window)) {
    const size_t n = std::min(ids.size() - start, static_cast<size_t>(a.window));
    std::vector<int32_t> seq = {tok->bos_id() >= 0 ? tok->bos_id() : 1};
    seq.insert(seq.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
               ids.begin() + static_cast<std::ptrdiff_t>(start + n - 1));
    logits.resize(seq.size() * static_cast<size_t>(V));
    m.model->reset();
    m.model->forward(seq.data(), static_cast<int64_t>(seq.size()), logits.data(), true);
    if (base.model) {
      blogits.resize(logits.size());
      base.model->reset();
      base.model->forward(seq.data(), static_cast<int64_t>(seq.size()), blogits.data(), true);
    }
    for (size_t i = 0; i < n; ++i) {
      log_softmax(logits.data() + i * static_cast<size_t>(V), V, lp);
      const double l = -lp[static_cast<size_t>(ids[start + i])];
      nll += l;
      nll2 += l * l;
      if (base.model) {
        log_softmax(blogits.data() + i * static_cast<size_t>(V), V, blp);
        for (int64_t v = 0; v < V; ++v)
          kl += std::exp(blp[static_cast<size_t>(v)]) *
                (blp[static_cast<size_t>(v)] - lp[static_cast<size_t>(v)]);
      }
      ++count;
    }
  }
  const double mean = nll / double(count), var = std::max(0.0, nll2 / double(count) - mean * mean);
  const double ppl = std::exp(mean), ppl_err = ppl * std::sqrt(var / double(count));
  // Decode speed: greedy from BOS, one token per forward; best of 5 runs (shared machines).
  std::vector<float> last(static_cast<size_t>(V));
  const int64_t steps = std::min<int64_t>(a.decode_tokens, m.model->context_size() - 1);
  double tps = 0;
  for (int run = 0; run < 5; ++run) {
    int32_t t = tok->bos_id() >= 0 ? tok->bos_id() : 1;
    m.model->reset();
    Timer timer;
    for (int64_t i = 0; i < steps; ++i) {
      m.model->forward(&t, 1, last.data(), false);
      t = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    }
    tps = std::max(tps, double(steps) / timer.seconds());
  }
  if (a.json) {
    nlohmann::ordered_json j{{"model", a.model},
                             {"tokens", count},
                             {"nll", mean},
                             {"ppl", ppl},
                             {"ppl_err", ppl_err},
                             {"decode_tok_s", tps},
                             {"file_bytes", m.file_bytes},
                             {"weight_bytes", m.model->weight_bytes()},
                             {"parameters", m.model->parameter_count()}};
    if (base.model) j["kl"] = kl / double(count);
    fmt::print("{}\n", j.dump());
  } else {
    fmt::print("tokens: {}\nPPL = {:.4f} +/- {:.4f} (mean NLL {:.4f})\n", count, ppl, ppl_err,
               mean);
    if (base.model) fmt::print("KL divergence vs {}: {:.6f}\n", a.base, kl / double(count));
    fmt::print("decode: {:.1f} tok/s ({} tokens)\n", tps, steps);
  }
  return 0;
}

const bool registered = register_command(
    {"qeval", "Perplexity, KL vs a base model and decode speed of a (quantized) model", 42,
     [](CLI::App* sub) -> RunFn {
       auto a = std::make_shared<QevalArgs>();
       sub->add_option("MODEL", a->model, "model folder/file (TorchAO-quantized or not)")
           ->required();
       sub->add_option("--text", a->text, "evaluation text")->required();
       sub->add_option("--base", a->base, "base model for the KL divergence");
       sub->add_option("--chars", a->chars, "characters of the text to score (0 = all)");
       sub->add_option("--window", a->window, "tokens per scoring window (each preceded by BOS)");
       sub->add_option("--decode-tokens", a->decode_tokens,
                       "greedy tokens timed for decode speed (best of 5 runs)");
       sub->add_option("--threads,-t", a->threads, "threads (default: all)");
       sub->add_flag("--json", a->json, "one JSON line");
       return [a] { return run_qeval(*a); };
     }});

}  // namespace
}  // namespace ao::cli

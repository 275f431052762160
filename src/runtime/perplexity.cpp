#include "ao/runtime/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ao/core/error.h"
#include "ao/core/log.h"
#include "ao/core/parallel.h"
#include "kernels/cpu/elementwise.h"

namespace ao::runtime {

PerplexityMode perplexity_mode_from_name(std::string_view name) {
  if (name == "llama") return PerplexityMode::llama;
  if (name == "bos-windows") return PerplexityMode::bos_windows;
  fail("unknown perplexity mode '{}' (known: llama, bos-windows)", name);
}

const char* perplexity_mode_name(PerplexityMode m) {
  return m == PerplexityMode::llama ? "llama" : "bos-windows";
}

// ---- text protocol ----------------------------------------------------------------------

namespace {

// Byte length of the first `max_chars` UTF-8 code points of s.
size_t utf8_prefix_bytes(std::string_view s, size_t max_chars) {
  size_t chars = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (chars == max_chars) return i;
      ++chars;
    }
  }
  return i;
}

int32_t newline_token(const text::Tokenizer& tok) {
  if (auto id = tok.piece_to_id("<0x0A>")) return *id;
  const auto ids = tok.encode("\n", false);
  AO_CHECK(ids.size() == 1, "tokenizer '{}' has no single newline token", tok.description());
  return ids[0];
}

}  // namespace

std::vector<int32_t> tokenize_paragraphs(const text::Tokenizer& tok, std::string_view text,
                                         size_t max_chars) {
  text = text.substr(0, utf8_prefix_bytes(text, max_chars));
  const int32_t nl = newline_token(tok);
  std::vector<int32_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view para = text.substr(start, end - start);
    const auto is_space = [](char ch) {
      return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
    };
    while (!para.empty() && is_space(para.front())) para.remove_prefix(1);
    while (!para.empty() && is_space(para.back())) para.remove_suffix(1);
    if (!para.empty()) {
      const auto ids = tok.encode(para, false);
      out.insert(out.end(), ids.begin(), ids.end());
      out.push_back(nl);
    }
    start = end + 2;
  }
  return out;
}

// ---- KL --------------------------------------------------------------------------------

double kl_divergence(std::span<const float> base, std::span<const float> lp) {
  AO_CHECK(base.size() == lp.size(), "kl_divergence: vocabularies differ ({} vs {})", base.size(),
           lp.size());
  double z = 0;
  for (float b : base) z += std::exp(double(b));
  const double log_z = std::log(z);
  double kl = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    if (std::isinf(base[i])) continue;  // probability ~0 in the base
    const double b = double(base[i]) - log_z;
    kl += std::exp(b) * (b - double(lp[i]));
  }
  return std::max(kl, 0.0);
}

void KlAccumulator::add(std::span<const float> base, std::span<const float> lp, int32_t target,
                        std::optional<double> base_target_logprob) {
  AO_CHECK(target >= 0 && size_t(target) < lp.size(), "KL: target {} outside the vocabulary",
           target);
  const auto am = [](std::span<const float> v) {
    return std::max_element(v.begin(), v.end()) - v.begin();
  };
  add_terms(kl_divergence(base, lp), am(base) == am(lp),
            -base_target_logprob.value_or(base[target]), -double(lp[target]));
}

void KlAccumulator::add_terms(double kl, bool top1_same, double base_nll, double nll) {
  kl_.push_back(kl);
  same_ += top1_same;
  base_nll_ += base_nll;
  nll_ += nll;
}

KlStats KlAccumulator::stats() const {
  KlStats s;
  s.n = static_cast<int64_t>(kl_.size());
  if (s.n == 0) return s;
  double sum = 0, sum2 = 0;
  for (double k : kl_) sum += k, sum2 += k * k;
  s.mean_kl = sum / s.n;
  s.kl_stderr =
      s.n > 1 ? std::sqrt(std::max(0.0, sum2 / s.n - s.mean_kl * s.mean_kl) / (s.n - 1)) : 0;
  std::vector<double> sorted = kl_;
  std::sort(sorted.begin(), sorted.end());
  s.max_kl = sorted.back();
  s.median_kl = sorted[sorted.size() / 2];
  s.kl_p99 = sorted[std::min(sorted.size() - 1, static_cast<size_t>(0.99 * sorted.size()))];
  s.top1_agreement = double(same_) / s.n;
  s.top1_stderr = s.n > 1 ? std::sqrt(s.top1_agreement * (1 - s.top1_agreement) / (s.n - 1)) : 0;
  s.base_ppl = std::exp(base_nll_ / s.n);
  s.ppl = std::exp(nll_ / s.n);
  return s;
}

// ---- saved log-probabilities -------------------------------------------------------------

namespace {

constexpr char kMagic[8] = {'A', 'O', 'L', 'O', 'G', 'P', 'R', '1'};
struct FileHeader {
  char magic[8];
  int32_t vocab;
  int32_t mode;
  int64_t n_tokens;
  int64_t ctx;
};
constexpr float kLogprobRange = 24.0f;
// Row: int32 target, f32 exact log-prob of the target, f32 low end, f32 step, u16[vocab].
size_t row_bytes(int32_t vocab) { return 4 + 4 + 4 + 4 + 2 * size_t(vocab); }

}  // namespace

struct LogprobWriter::Impl {
  AtomicFileWriter file;
  int32_t vocab;
  int64_t n_tokens, rows = 0;
  std::vector<uint8_t> buf;
  Impl(const std::string& p, int32_t v, int64_t n)
      : file(p), vocab(v), n_tokens(n), buf(row_bytes(v)) {}
};

LogprobWriter::LogprobWriter(const std::string& path, int32_t vocab, int64_t n_tokens, int64_t ctx,
                             PerplexityMode mode)
    : impl_(std::make_unique<Impl>(path, vocab, n_tokens)) {
  FileHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.vocab = vocab, h.mode = static_cast<int32_t>(mode), h.n_tokens = n_tokens, h.ctx = ctx;
  impl_->file.write(&h, sizeof(h));
}

LogprobWriter::~LogprobWriter() = default;

void LogprobWriter::add(std::span<const float> lp, int32_t target) {
  AO_CHECK(lp.size() == size_t(impl_->vocab), "{}: row has {} log-probs, expected {}",
           impl_->file.path(), lp.size(), impl_->vocab);
  AO_CHECK(impl_->rows < impl_->n_tokens, "{}: more than the announced {} rows", impl_->file.path(),
           impl_->n_tokens);
  // Code 0 marks a log-prob below the kept range (read back as -inf: probability ~0).
  const float mx = *std::max_element(lp.begin(), lp.end());
  const float mn = *std::min_element(lp.begin(), lp.end());
  const float lo = std::max(mn, mx - kLogprobRange);
  const float scale = mx > lo ? (mx - lo) / 65534.0f : 1.0f;
  uint8_t* p = impl_->buf.data();
  AO_CHECK(target >= 0 && size_t(target) < lp.size(), "{}: target {} outside the vocabulary",
           impl_->file.path(), target);
  std::memcpy(p, &target, 4);
  std::memcpy(p + 4, &lp[target], 4);
  std::memcpy(p + 8, &lo, 4);
  std::memcpy(p + 12, &scale, 4);
  auto* q = reinterpret_cast<uint16_t*>(p + 16);
  for (size_t i = 0; i < lp.size(); ++i) {
    if (lp[i] < lo) {
      q[i] = 0;
      continue;
    }
    const float v = std::round((lp[i] - lo) / scale);
    q[i] = static_cast<uint16_t>(1 + std::min(v, 65534.0f));
  }
  impl_->file.write(p, impl_->buf.size());
  ++impl_->rows;
}

void LogprobWriter::commit() {
  AO_CHECK(impl_->rows == impl_->n_tokens, "{}: {} rows written, {} announced", impl_->file.path(),
           impl_->rows, impl_->n_tokens);
  impl_->file.commit();
}

LogprobReader::LogprobReader(const std::string& path) : path_(path), file_(MappedFile::open(path)) {
  FileHeader h{};
  AO_CHECK(file_->size() >= sizeof(h), "{}: too short for a saved log-prob file", path);
  std::memcpy(&h, file_->data(), sizeof(h));
  AO_CHECK(std::memcmp(h.magic, kMagic, 8) == 0,
           "{}: not a log-prob file written by `ao perplexity --save-logits`", path);
  AO_CHECK(h.vocab > 0 && h.n_tokens >= 0 && (h.mode == 0 || h.mode == 1), "{}: corrupt header",
           path);
  vocab_ = h.vocab, n_tokens_ = h.n_tokens, ctx_ = h.ctx,
  mode_ = static_cast<PerplexityMode>(h.mode);
  const uint64_t expect = sizeof(h) + uint64_t(n_tokens_) * row_bytes(vocab_);
  AO_CHECK(file_->size() == expect, "{}: {} bytes, expected {} for {} rows of {} log-probs", path,
           file_->size(), expect, n_tokens_, vocab_);
}

int32_t LogprobReader::row(int64_t i, std::span<float> lp, float* target_logprob) const {
  AO_CHECK(i >= 0 && i < n_tokens_, "{}: row {} out of range", path_, i);
  AO_CHECK(lp.size() == size_t(vocab_), "{}: row buffer has {} entries, expected {}", path_,
           lp.size(), vocab_);
  const uint8_t* p = file_->data() + sizeof(FileHeader) + size_t(i) * row_bytes(vocab_);
  int32_t target;
  float lo, scale;
  std::memcpy(&target, p, 4);
  if (target_logprob) std::memcpy(target_logprob, p + 4, 4);
  std::memcpy(&lo, p + 8, 4);
  std::memcpy(&scale, p + 12, 4);
  AO_CHECK(target >= 0 && target < vocab_, "{}: row {} has target {} outside the vocabulary", path_,
           i, target);
  const auto* q = reinterpret_cast<const uint16_t*>(p + 16);
  for (int32_t k = 0; k < vocab_; ++k)
    lp[k] = q[k] == 0 ? -INFINITY : lo + scale * static_cast<float>(q[k] - 1);
  return target;
}

// ---- evaluation ---------------------------------------------------------------------------

namespace {

// One forward pass: the tokens fed, and the targets that the logits at positions
// first_scored, first_scored + 1, ... predict.
struct Window {
  std::vector<int32_t> input;
  int64_t first_scored = 0;
  std::vector<int32_t> targets;
};

std::vector<Window> make_windows(std::span<const int32_t> tokens, const PerplexityOptions& o,
                                 int32_t bos) {
  std::vector<Window> w;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (o.mode == PerplexityMode::llama) {
    const int64_t n_chunks = n / o.ctx;
    AO_CHECK(n_chunks >= 1, "perplexity: the text has {} tokens, fewer than one chunk of --ctx {}",
             n, o.ctx);
    for (int64_t c = 0; c < n_chunks; ++c) {
      Window win;
      win.input.assign(tokens.begin() + c * o.ctx, tokens.begin() + (c + 1) * o.ctx);
      win.input[0] = bos;
      win.first_scored = o.ctx / 2;
      for (int64_t j = win.first_scored; j + 1 < o.ctx; ++j)
        win.targets.push_back(win.input[j + 1]);
      w.push_back(std::move(win));
    }
  } else {
    const int64_t per = o.ctx - 1;
    AO_CHECK(n >= per,
             "perplexity: the text has {} tokens, fewer than one window of {} (--ctx {} minus BOS)",
             n, per, o.ctx);
    for (int64_t s = 0; s + per <= n; s += per) {  // full windows only, as llama-perplexity
      Window win;
      const int64_t e = s + per;
      win.input.push_back(bos);
      win.input.insert(win.input.end(), tokens.begin() + s, tokens.begin() + e);
      win.first_scored = 0;
      win.targets.assign(tokens.begin() + s, tokens.begin() + e);
      win.input.pop_back();  // the last token is only a target
      w.push_back(std::move(win));
    }
  }
  return w;
}

}  // namespace

PerplexityModel perplexity_model(models::CausalLM& model) {
  PerplexityModel m;
  m.vocab_size = model.vocab_size();
  m.context_size = model.context_size();
  m.bos_id = model.config().bos_token_id;
  m.window_logits = [&model](std::span<const int32_t> input, float* logits) {
    model.reset();
    model.forward(input.data(), static_cast<int64_t>(input.size()), logits, true);
  };
  return m;
}

PerplexityResult evaluate_perplexity(models::CausalLM& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& o) {
  PerplexityResult r = evaluate_perplexity(perplexity_model(model), tokens, o);
  model.reset();
  return r;
}

PerplexityResult evaluate_perplexity(const PerplexityModel& model, std::span<const int32_t> tokens,
                                     const PerplexityOptions& o) {
  AO_CHECK(o.ctx >= 2, "perplexity: --ctx must be at least 2, got {}", o.ctx);
  AO_CHECK(o.ctx <= model.context_size, "perplexity: --ctx {} exceeds the model's context size {}",
           o.ctx, model.context_size);
  const int32_t bos = o.bos_id >= 0 ? o.bos_id : model.bos_id;
  const int64_t V = model.vocab_size;
  AO_CHECK(bos >= 0 && bos < V, "perplexity: BOS id {} is outside the vocabulary of {}", bos, V);
  for (size_t i = 0; i < tokens.size(); ++i)
    AO_CHECK(tokens[i] >= 0 && tokens[i] < V,
             "perplexity: token {} at position {} is outside the vocabulary of {}", tokens[i], i,
             V);
  std::vector<Window> windows = make_windows(tokens, o, bos);
  if (o.max_chunks >= 0 && static_cast<int64_t>(windows.size()) > o.max_chunks)
    windows.resize(o.max_chunks);
  int64_t total_scored = 0;
  for (const auto& w : windows) total_scored += static_cast<int64_t>(w.targets.size());

  std::optional<LogprobReader> base;
  if (!o.kl_base_path.empty()) {
    base.emplace(o.kl_base_path);
    AO_CHECK(base->vocab() == V, "{}: base run has a vocabulary of {}, this model {}",
             o.kl_base_path, base->vocab(), V);
    AO_CHECK(base->n_tokens() == total_scored && base->ctx() == o.ctx && base->mode() == o.mode,
             "{}: base run scored {} tokens with --ctx {} ({}), this run {} tokens with --ctx {} "
             "({}); use the same "
             "text and options",
             o.kl_base_path, base->n_tokens(), base->ctx(), perplexity_mode_name(base->mode()),
             total_scored, o.ctx, perplexity_mode_name(o.mode));
  }
  std::unique_ptr<LogprobWriter> writer;
  if (!o.save_logprobs_path.empty())
    writer = std::make_unique<LogprobWriter>(o.save_logprobs_path, static_cast<int32_t>(V),
                                             total_scored, o.ctx, o.mode);

  PerplexityResult r;
  KlAccumulator kl;
  double nll2 = 0;
  Timer timer;
  std::vector<float> logits;
  std::vector<float> base_row(base ? V : 0);
  int64_t row_index = 0;
  for (size_t c = 0; c < windows.size(); ++c) {
    const Window& w = windows[c];
    const int64_t T = static_cast<int64_t>(w.input.size());
    logits.resize(static_cast<size_t>(T * V));
    model.window_logits(w.input, logits.data());
    const int64_t n_scored = static_cast<int64_t>(w.targets.size());
    std::vector<double> nll(n_scored);
    // Log-softmax of the scored rows in parallel; accumulate in order (deterministic sums).
    parallel_for(0, n_scored, std::max<int64_t>(1, (int64_t{1} << 18) / V),
                 [&](int64_t b, int64_t e) {
                   for (int64_t i = b; i < e; ++i) {
                     float* row = logits.data() + (w.first_scored + i) * V;
                     kernels::cpu::log_softmax_f32(row, row, V);
                     nll[i] = -double(row[w.targets[i]]);
                   }
                 });
    for (int64_t i = 0; i < n_scored; ++i, ++row_index) {
      std::span<const float> row(logits.data() + (w.first_scored + i) * V, static_cast<size_t>(V));
      r.nll_sum += nll[i];
      nll2 += nll[i] * nll[i];
      if (writer) writer->add(row, w.targets[i]);
      if (base) {
        float base_target_lp = 0;
        const int32_t t = base->row(row_index, base_row, &base_target_lp);
        AO_CHECK(
            t == w.targets[i],
            "{}: scored token {} is {} in the base run but {} here (different text or tokenizer?)",
            o.kl_base_path, row_index, t, w.targets[i]);
        kl.add(base_row, row, t, base_target_lp);
      }
    }
    r.n_tokens += n_scored;
    r.n_chunks = static_cast<int64_t>(c + 1);
    if (o.on_chunk)
      o.on_chunk({static_cast<int64_t>(c + 1), static_cast<int64_t>(windows.size()), r.n_tokens,
                  std::exp(r.nll_sum / std::max<int64_t>(r.n_tokens, 1)), timer.seconds()});
  }
  if (writer) writer->commit();
  AO_CHECK(r.n_tokens > 0, "perplexity: nothing to score");
  r.mean_nll = r.nll_sum / r.n_tokens;
  r.ppl = std::exp(r.mean_nll);
  const double var = std::max(0.0, nll2 / r.n_tokens - r.mean_nll * r.mean_nll);
  r.ppl_stderr = r.n_tokens > 1 ? std::sqrt(var / (r.n_tokens - 1)) * r.ppl : 0;
  r.seconds = timer.seconds();
  if (base) r.kl = kl.stats();
  return r;
}

}  // namespace ao::runtime

// SentencePiece .model files through libsentencepiece.
#include <sentencepiece_processor.h>

#include <filesystem>

#include "ao/core/error.h"
#include "ao/core/mmap.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace ao::text {

namespace {

class SentencePieceTokenizer : public detail::VocabTokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const std::string bytes = read_text_file(path);
    const auto status = sp_.LoadFromSerializedProto(bytes);
    AO_CHECK(status.ok(), "SentencePiece model '{}': cannot load: {}", path, status.ToString());
    const int n = sp_.GetPieceSize();
    for (int i = 0; i < n; ++i) {
      vocab_.pieces.push_back(sp_.IdToPiece(i));
      vocab_.scores.push_back(sp_.GetScore(i));
      TokenType t = TokenType::normal;
      if (sp_.IsUnknown(i))
        t = TokenType::unknown;
      else if (sp_.IsControl(i))
        t = TokenType::control;
      else if (sp_.IsByte(i))
        t = TokenType::byte;
      else if (sp_.IsUnused(i))
        t = TokenType::unused;
      vocab_.types.push_back(t);
      if (t == TokenType::control) literals_.add({vocab_.pieces.back(), i, false, false});
    }
    vocab_.build_index();
    bos_id_ = sp_.bos_id();
    eos_id_ = sp_.eos_id();
    unk_id_ = sp_.unk_id();
    default_add_bos_ = bos_id_ >= 0;
    // The normalizer spec is not exposed by the library: probe whether a dummy "▁" is added.
    std::vector<std::string> probe;
    AO_CHECK(sp_.Encode("a", &probe).ok(), "SentencePiece model '{}': cannot encode", path);
    adds_space_prefix_ = !probe.empty() && probe[0].rfind(detail::kSpmSpace, 0) == 0;
    description_ = fmt::format("SentencePiece model '{}' ({} pieces)",
                               std::filesystem::path(path).filename().string(), n);
  }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_bos && bos_id_ >= 0) out.push_back(bos_id_);
    std::vector<int> ids;
    literals_.split(
        text, [&](const detail::LiteralToken&) { return options.parse_special; },
        [&](std::string_view fragment) {
          const auto status = sp_.Encode(fragment, &ids);
          AO_CHECK(status.ok(), "{}: encode failed: {}", description_, status.ToString());
          out.insert(out.end(), ids.begin(), ids.end());
        },
        [&](const detail::LiteralToken& t) { out.push_back(t.id); });
    return out;
  }

  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const std::string& p = vocab_.pieces[id];
    if (vocab_.types[id] == TokenType::byte) {
      const int b = detail::parse_byte_piece(p);
      if (b >= 0) return std::string(1, static_cast<char>(b));
    }
    if (vocab_.types[id] == TokenType::control) return p;
    return detail::replace_all(p, detail::kSpmSpace, " ");
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  detail::LiteralSplitter literals_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace ao::text

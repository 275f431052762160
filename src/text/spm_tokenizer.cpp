#include "text/spm_tokenizer.h"

#include "ao/core/error.h"
#include "text/unicode.h"

namespace ao::text::detail {

SpmTokenizer::SpmTokenizer(Vocab vocab, int32_t bos, int32_t eos, int32_t unk,
                           bool add_space_prefix, std::string description) {
  vocab_ = std::move(vocab);
  AO_CHECK(
      vocab_.scores.size() == vocab_.pieces.size() && vocab_.types.size() == vocab_.pieces.size(),
      "{}: {} pieces but {} scores and {} types", description, vocab_.pieces.size(),
      vocab_.scores.size(), vocab_.types.size());
  vocab_.build_index();
  bos_id_ = bos;
  eos_id_ = eos;
  unk_id_ = unk;
  adds_space_prefix_ = add_space_prefix;
  default_add_bos_ = bos >= 0;
  description_ = std::move(description);
  for (int32_t i = 0; i < vocab_.size(); ++i) {
    const TokenType t = vocab_.types[i];
    if (t == TokenType::control || t == TokenType::user_defined)
      literals_.add({vocab_.pieces[i], i, false, false});
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text,
                                          const EncodeOptions& options) const {
  std::vector<int32_t> out;
  if (options.add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  // As llama.cpp: a text fragment gets the space prefix when it starts the text or follows
  // a special token; user-defined tokens are always matched, control tokens on request.
  bool prev_special = true;
  literals_.split(
      text,
      [&](const LiteralToken& t) {
        return options.parse_special || vocab_.types[t.id] == TokenType::user_defined;
      },
      [&](std::string_view fragment) {
        encode_text(fragment, adds_space_prefix_ && prev_special, out);
        prev_special = false;
      },
      [&](const LiteralToken& t) {
        out.push_back(t.id);
        prev_special = true;
      });
  return out;
}

void SpmTokenizer::encode_text(std::string_view fragment, bool prefix_space,
                               std::vector<int32_t>& out) const {
  std::string text;
  if (prefix_space) text = kSpmSpace;
  text += replace_all(fragment, " ", kSpmSpace);

  std::vector<BpeSymbol> syms = utf8_symbols(text);
  auto mergeable = [&](int32_t id) {
    const TokenType t = vocab_.types[id];
    return t == TokenType::normal || t == TokenType::user_defined;
  };
  bpe_merge(syms, [&](const BpeSymbol& l, const BpeSymbol& r) -> std::optional<BpePair> {
    auto id = vocab_.find(std::string_view(text).substr(l.start, l.len + r.len));
    if (!id || !mergeable(*id)) return std::nullopt;
    return BpePair{-static_cast<double>(vocab_.scores[*id]), *id};
  });
  for (const BpeSymbol& s : syms) {
    if (s.len == 0) continue;
    const std::string_view piece = std::string_view(text).substr(s.start, s.len);
    if (auto id = vocab_.find(piece); id && mergeable(*id)) {
      out.push_back(*id);
      continue;
    }
    for (const char c : piece) {
      const int32_t b = vocab_.byte_ids[static_cast<unsigned char>(c)];
      if (b >= 0) {
        out.push_back(b);
      } else if (unk_id_ >= 0) {
        out.push_back(unk_id_);
        break;
      }
    }
  }
}

std::string SpmTokenizer::token_bytes(int32_t id) const {
  check_id(id);
  const std::string& p = vocab_.pieces[id];
  switch (vocab_.types[id]) {
    case TokenType::byte: {
      const int b = parse_byte_piece(p);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : p;
    }
    case TokenType::control:
      return p;
    default:
      return replace_all(p, kSpmSpace, " ");
  }
}

}  // namespace ao::text::detail

#include "text/vocab.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "ao/core/error.h"
#include "text/unicode.h"

namespace ao::text::detail {

void Vocab::build_index() {
  ids.clear();
  ids.reserve(pieces.size());
  std::fill(std::begin(byte_ids), std::end(byte_ids), -1);
  for (int32_t i = 0; i < size(); ++i) {
    if (!pieces[i].empty()) ids.emplace(pieces[i], i);
    if (types[i] == TokenType::byte) {
      const int b = parse_byte_piece(pieces[i]);
      if (b >= 0 && byte_ids[b] < 0) byte_ids[b] = i;
    }
  }
}

std::vector<BpeSymbol> utf8_symbols(std::string_view word) {
  std::vector<BpeSymbol> syms;
  syms.reserve(word.size());
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8_char_len(word, i);
    const auto idx = static_cast<int32_t>(syms.size());
    syms.push_back({-1, static_cast<uint32_t>(i), static_cast<uint32_t>(n), idx - 1, idx + 1});
    i += n;
  }
  if (!syms.empty()) syms.back().next = -1;
  return syms;
}

Regex::Regex(const std::string& pattern, const std::string& context) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("{}: cannot compile regex '{}' at offset {}: {}", context, pattern, offset,
         reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(code,
                    PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), pos, 0, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      fail("regex match failed: {}", reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e == b) {  // empty match: skip one character
      if (b >= text.size()) break;
      pos = b + utf8_char_len(text, b);
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
  return out;
}

void LiteralSplitter::add(LiteralToken t) {
  if (t.content.empty()) return;
  const auto idx = static_cast<int32_t>(tokens_.size());
  auto& bucket = by_first_byte_[static_cast<unsigned char>(t.content[0])];
  tokens_.push_back(std::move(t));
  bucket.push_back(idx);
  // Longest first, so the first allowed match at a position is the longest.
  std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t a, int32_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

namespace {
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

void LiteralSplitter::split(std::string_view text,
                            const std::function<bool(const LiteralToken&)>& allowed,
                            const std::function<void(std::string_view)>& on_text,
                            const std::function<void(const LiteralToken&)>& on_token) const {
  size_t text_start = 0;  // start of the pending text run
  size_t pos = 0;
  while (pos < text.size()) {
    const LiteralToken* hit = nullptr;
    for (int32_t idx : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const LiteralToken& t = tokens_[idx];
      if (text.compare(pos, t.content.size(), t.content) == 0 && allowed(t)) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t text_end = pos;
    if (hit->lstrip)
      while (text_end > text_start && is_space(text[text_end - 1])) --text_end;
    if (text_end > text_start) on_text(text.substr(text_start, text_end - text_start));
    on_token(*hit);
    pos += hit->content.size();
    if (hit->rstrip)
      while (pos < text.size() && is_space(text[pos])) ++pos;
    text_start = pos;
  }
  if (text_start < text.size()) on_text(text.substr(text_start));
}

}  // namespace ao::text::detail

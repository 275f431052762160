// Internal building blocks of the tokenizers: the vocabulary table, the BPE merge loop
// (priority queue over a linked list of symbols) and a PCRE2 regex wrapper.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ao/text/tokenizer.h"

namespace ao::text::detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Pieces, their types and (for SentencePiece-style models) scores.
struct Vocab {
  std::vector<std::string> pieces;
  std::vector<TokenType> types;
  std::vector<float> scores;  // empty when the model has no scores
  PieceMap ids;               // piece -> id (first occurrence wins)
  int32_t byte_ids[256];      // id of "<0xNN>" byte tokens, -1 if absent

  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
  // Fills `ids` and `byte_ids` from `pieces`/`types` (byte ids only for TokenType::byte).
  void build_index();
  std::optional<int32_t> find(std::string_view piece) const {
    auto it = ids.find(piece);
    if (it == ids.end()) return std::nullopt;
    return it->second;
  }
};

// A symbol of the BPE merge loop: a span [start, start+len) of the word being encoded,
// its token id (-1 while unknown) and its neighbours in the linked list.
struct BpeSymbol {
  int32_t id;
  uint32_t start, len;
  int32_t prev, next;
};

struct BpePair {
  double priority;  // lower merges first
  int32_t merged_id;
};

// Repeatedly merges the adjacent pair with the lowest priority (ties: leftmost) as long as
// `pair_of(left, right)` returns one. Symbols merged away keep len == 0.
template <class PairFn>
void bpe_merge(std::vector<BpeSymbol>& syms, PairFn&& pair_of) {
  struct Candidate {
    double priority;
    int32_t left, right;
    uint32_t size;  // left.len + right.len when queued: a stale entry no longer matches
    int32_t merged_id;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    std::optional<BpePair> p = pair_of(syms[l], syms[r]);
    if (p) queue.push({p->priority, l, r, syms[l].len + syms[r].len, p->merged_id});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i)
    try_add(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    BpeSymbol& l = syms[c.left];
    if (l.len == 0 || l.next != c.right) continue;
    BpeSymbol& r = syms[c.right];
    if (r.len == 0 || l.len + r.len != c.size) continue;
    l.len += r.len;
    l.id = c.merged_id;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    try_add(l.prev, c.left);
    try_add(c.left, l.next);
  }
}

// Symbols for the UTF-8 characters of `word` (ids -1).
std::vector<BpeSymbol> utf8_symbols(std::string_view word);

// PCRE2 regex (UTF + Unicode properties, JIT when available), usable from several threads.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& context);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // [begin, end) byte ranges of all non-overlapping matches, left to right.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// Shared implementation of the vocabulary-based tokenizers.
class VocabTokenizer : public Tokenizer {
 public:
  const std::string& piece(int32_t id) const override {
    check_id(id);
    return vocab_.pieces[id];
  }
  std::optional<int32_t> piece_to_id(std::string_view piece) const override {
    return vocab_.find(piece);
  }
  TokenType token_type(int32_t id) const override {
    check_id(id);
    return vocab_.types[id];
  }
  int32_t vocab_size() const override { return vocab_.size(); }

 protected:
  Vocab vocab_;
};

// Splits `text` at occurrences of the given literal tokens (longest match wins at each
// position). Calls on_text(span) for text between tokens and on_token(index) for a token.
struct LiteralToken {
  std::string content;
  int32_t id;
  bool lstrip = false, rstrip = false;  // absorb whitespace on that side
};
class LiteralSplitter {
 public:
  void add(LiteralToken t);
  bool empty() const { return tokens_.empty(); }
  // `allowed(i)` says whether token i may be matched in this call.
  void split(std::string_view text, const std::function<bool(const LiteralToken&)>& allowed,
             const std::function<void(std::string_view)>& on_text,
             const std::function<void(const LiteralToken&)>& on_token) const;

 private:
  std::vector<LiteralToken> tokens_;
  std::vector<std::vector<int32_t>> by_first_byte_ = std::vector<std::vector<int32_t>>(256);
};

}  // namespace ao::text::detail

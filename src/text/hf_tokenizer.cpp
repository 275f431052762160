#include "text/hf_tokenizer.h"

#include <filesystem>
#include <unordered_map>
#include <variant>

#include "ao/core/error.h"
#include "ao/core/mmap.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace ao::text {

namespace detail {

namespace {

using json = nlohmann::json;

// ---- pipeline steps ------------------------------------------------------------------

struct Normalizer {
  enum class Kind { prepend, replace_string, replace_regex, unicode, strip } kind;
  UnicodeForm form = UnicodeForm::nfc;  // for Kind::unicode
  std::string a, b;                     // prepend: a; replace: a -> b
  std::shared_ptr<Regex> regex;
  bool strip_left = false, strip_right = false;
};

enum class SplitBehavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };

struct PreTokenizer {
  enum class Kind { byte_level, split, metaspace } kind;
  // byte_level
  bool add_prefix_space = false;
  std::shared_ptr<Regex> regex;  // byte_level (when use_regex) and split
  // split
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  // metaspace
  std::string replacement;
  enum class Prepend { always, first, never } prepend = Prepend::always;
  bool split = true;
};

struct Word {
  std::string text;
  bool byte_level = false;  // already mapped to the GPT-2 byte alphabet
};

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

void split_by_matches(const std::string& s,
                      const std::vector<std::pair<size_t, size_t>>& raw_matches,
                      SplitBehavior behavior, bool invert, std::vector<std::string>& out) {
  // Pieces as (begin, end, is_match).
  struct Piece {
    size_t b, e;
    bool match;
  };
  std::vector<Piece> pieces;
  size_t pos = 0;
  for (auto [b, e] : raw_matches) {
    if (b > pos) pieces.push_back({pos, b, invert});
    pieces.push_back({b, e, !invert});
    pos = e;
  }
  if (pos < s.size()) pieces.push_back({pos, s.size(), invert});

  std::vector<std::pair<size_t, size_t>> spans;
  switch (behavior) {
    case SplitBehavior::isolated:
      for (auto& p : pieces) spans.emplace_back(p.b, p.e);
      break;
    case SplitBehavior::removed:
      for (auto& p : pieces)
        if (!p.match) spans.emplace_back(p.b, p.e);
      break;
    case SplitBehavior::merged_with_previous:
      for (auto& p : pieces) {
        if (p.match && !spans.empty() && spans.back().second == p.b)
          spans.back().second = p.e;
        else
          spans.emplace_back(p.b, p.e);
      }
      break;
    case SplitBehavior::merged_with_next: {
      bool pending_match = false;
      for (auto& p : pieces) {
        if (pending_match) {
          spans.back().second = p.e;
          pending_match = p.match;
        } else {
          spans.emplace_back(p.b, p.e);
          pending_match = p.match;
        }
      }
      break;
    }
    case SplitBehavior::contiguous:
      for (size_t i = 0; i < pieces.size(); ++i) {
        if (pieces[i].match && i > 0 && pieces[i - 1].match)
          spans.back().second = pieces[i].e;
        else
          spans.emplace_back(pieces[i].b, pieces[i].e);
      }
      break;
  }
  for (auto [b, e] : spans)
    if (e > b) out.push_back(s.substr(b, e - b));
}

std::vector<std::pair<size_t, size_t>> literal_matches(std::string_view s, std::string_view lit) {
  std::vector<std::pair<size_t, size_t>> m;
  if (lit.empty()) return m;
  for (size_t pos = s.find(lit); pos != std::string_view::npos; pos = s.find(lit, pos + lit.size()))
    m.emplace_back(pos, pos + lit.size());
  return m;
}

// ---- the tokenizer -------------------------------------------------------------------

class HfTokenizer : public VocabTokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override {
    std::vector<int32_t> out;
    if (options.add_bos) out.insert(out.end(), prefix_.begin(), prefix_.end());
    literals_.split(
        text,
        [&](const LiteralToken& t) {
          return options.parse_special || vocab_.types[t.id] == TokenType::user_defined;
        },
        [&](std::string_view fragment) {
          encode_fragment(fragment, fragment.data() == text.data(), out);
        },
        [&](const LiteralToken& t) { out.push_back(t.id); });
    if (options.add_bos) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const std::string& p = vocab_.pieces[id];
    const TokenType t = vocab_.types[id];
    if (t == TokenType::control || t == TokenType::user_defined) return p;
    if (t == TokenType::byte) {
      const int b = parse_byte_piece(p);
      if (b >= 0) return std::string(1, static_cast<char>(b));
    }
    if (byte_level_decode_) {
      std::string out;
      unicode_to_bytes(p, out);
      return out;
    }
    return replace_all(p, kSpmSpace, " ");
  }

  void encode_fragment(std::string_view fragment, bool at_text_start,
                       std::vector<int32_t>& out) const {
    std::string s(fragment);
    for (const Normalizer& n : normalizers_) s = normalize(n, s);
    std::vector<Word> words{{std::move(s), false}};
    std::vector<Word> next;
    for (const PreTokenizer& p : pre_tokenizers_) {
      next.clear();
      for (Word& w : words) pre_tokenize(p, w, at_text_start, next);
      words.swap(next);
    }
    for (const Word& w : words) encode_word(w.text, out);
  }

  std::string normalize(const Normalizer& n, const std::string& s) const {
    switch (n.kind) {
      case Normalizer::Kind::prepend:
        return s.empty() ? s : n.a + s;
      case Normalizer::Kind::replace_string:
        return replace_all(s, n.a, n.b);
      case Normalizer::Kind::replace_regex: {
        std::string out;
        size_t pos = 0;
        for (auto [b, e] : n.regex->find_all(s)) {
          out.append(s, pos, b - pos);
          out += n.b;
          pos = e;
        }
        out.append(s, pos);
        return out;
      }
      case Normalizer::Kind::unicode:
        if (is_ascii(s) && n.form != UnicodeForm::lowercase) return s;
        return unicode_normalize(s, n.form);
      case Normalizer::Kind::strip: {
        size_t b = 0, e = s.size();
        auto space = [](char c) {
          return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
        };
        if (n.strip_left)
          while (b < e && space(s[b])) ++b;
        if (n.strip_right)
          while (e > b && space(s[e - 1])) --e;
        return s.substr(b, e - b);
      }
    }
    return s;
  }

  void pre_tokenize(const PreTokenizer& p, Word& w, bool at_text_start,
                    std::vector<Word>& out) const {
    if (w.byte_level) {  // nothing after ByteLevel changes its output in the supported pipelines
      out.push_back(std::move(w));
      return;
    }
    std::vector<std::string> pieces;
    switch (p.kind) {
      case PreTokenizer::Kind::byte_level: {
        std::string s = std::move(w.text);
        if (p.add_prefix_space && !s.empty() && s[0] != ' ') s = " " + s;
        if (p.regex)
          split_by_matches(s, p.regex->find_all(s), SplitBehavior::isolated, false, pieces);
        else if (!s.empty())
          pieces.push_back(std::move(s));
        const auto& map = byte_to_unicode();
        for (const std::string& piece : pieces) {
          std::string mapped;
          mapped.reserve(piece.size() * 2);
          for (char c : piece) mapped += map[static_cast<unsigned char>(c)];
          out.push_back({std::move(mapped), true});
        }
        return;
      }
      case PreTokenizer::Kind::split:
        split_by_matches(w.text, p.regex->find_all(w.text), p.behavior, p.invert, pieces);
        break;
      case PreTokenizer::Kind::metaspace: {
        std::string s = replace_all(w.text, " ", p.replacement);
        const bool prepend =
            p.prepend == PreTokenizer::Prepend::always ||
            (p.prepend == PreTokenizer::Prepend::first && at_text_start && out.empty());
        if (prepend && s.rfind(p.replacement, 0) != 0) s = p.replacement + s;
        if (p.split)
          split_by_matches(s, literal_matches(s, p.replacement), SplitBehavior::merged_with_next,
                           false, pieces);
        else
          pieces.push_back(std::move(s));
        break;
      }
    }
    for (std::string& piece : pieces) out.push_back({std::move(piece), false});
  }

  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (auto id = vocab_.find(word)) {
        out.push_back(*id);
        return;
      }
    }
    std::vector<BpeSymbol> syms;
    syms.reserve(word.size());
    auto push = [&](int32_t id, size_t start, size_t len) {
      const auto idx = static_cast<int32_t>(syms.size());
      syms.push_back(
          {id, static_cast<uint32_t>(start), static_cast<uint32_t>(len), idx - 1, idx + 1});
    };
    for (size_t i = 0; i < word.size();) {
      const size_t n = utf8_char_len(word, i);
      if (auto id = vocab_.find(word.substr(i, n))) {
        push(*id, i, n);
      } else if (byte_fallback_ && [&] {
                   for (size_t k = 0; k < n; ++k)
                     if (vocab_.byte_ids[static_cast<unsigned char>(word[i + k])] < 0) return false;
                   return true;
                 }()) {
        for (size_t k = 0; k < n; ++k)
          push(vocab_.byte_ids[static_cast<unsigned char>(word[i + k])], i + k, 1);
      } else if (unk_id_ >= 0) {
        if (fuse_unk_ && !syms.empty() && syms.back().id == unk_id_)
          syms.back().len += static_cast<uint32_t>(n);
        else
          push(unk_id_, i, n);
      }
      i += n;
    }
    if (syms.empty()) return;
    syms.back().next = -1;
    bpe_merge(syms, [&](const BpeSymbol& l, const BpeSymbol& r) -> std::optional<BpePair> {
      auto it = merges_.find(merge_key(l.id, r.id));
      if (it == merges_.end()) return std::nullopt;
      return BpePair{static_cast<double>(it->second.first), it->second.second};
    });
    for (const BpeSymbol& s : syms)
      if (s.len > 0) out.push_back(s.id);
  }

  static uint64_t merge_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
  bool byte_fallback_ = false, ignore_merges_ = false, fuse_unk_ = false;
  bool byte_level_decode_ = false;
  std::vector<int32_t> prefix_, suffix_;
  LiteralSplitter literals_;

  friend class HfBuilder;
};

// ---- building from JSON --------------------------------------------------------------

class HfBuilder {
 public:
  HfBuilder(const json& doc, std::string name, const SpecialTokenOverrides& overrides)
      : doc_(doc),
        name_(std::move(name)),
        overrides_(overrides),
        tok_(std::make_unique<HfTokenizer>()) {}

  std::unique_ptr<Tokenizer> build() {
    AO_CHECK(doc_.is_object(), "{}: expected a JSON object at the top level", name_);
    read_model();
    read_added_tokens();
    tok_->vocab_.build_index();
    read_merges();
    if (has(doc_, "normalizer")) read_normalizer(doc_["normalizer"], "normalizer");
    if (has(doc_, "pre_tokenizer")) read_pre_tokenizer(doc_["pre_tokenizer"], "pre_tokenizer");
    if (has(doc_, "post_processor")) read_post_processor(doc_["post_processor"], "post_processor");
    if (has(doc_, "decoder"))
      read_decoder(doc_["decoder"], "decoder");
    else
      tok_->byte_level_decode_ = uses_byte_level_;
    pick_special_ids();
    tok_->description_ = fmt::format(
        "{} (BPE, {}, {} tokens)", name_,
        tok_->byte_level_decode_ ? "byte-level" : "SentencePiece-style", tok_->vocab_.size());
    return std::move(tok_);
  }

 private:
  static bool has(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

  [[noreturn]] void unsupported(const std::string& what) const {
    throw NotSupported(fmt::format("{}: {}", name_, what));
  }

  template <class T>
  T get(const json& j, const char* key, T fallback, const std::string& where) const {
    if (!has(j, key)) return fallback;
    try {
      return j[key].get<T>();
    } catch (const json::exception& e) {
      fail("{}: field '{}{}{}' has the wrong type: {}", name_, where, where.empty() ? "" : ".", key,
           e.what());
    }
  }

  const json& object_field(const json& j, const char* key, const std::string& where) const {
    AO_CHECK(has(j, key), "{}: missing field '{}{}{}'", name_, where, where.empty() ? "" : ".",
             key);
    return j[key];
  }

  void read_model() {
    const json& model = object_field(doc_, "model", "");
    AO_CHECK(model.is_object(), "{}: field 'model' is not an object", name_);
    const std::string type = get<std::string>(model, "type", "BPE", "model");
    if (type != "BPE")
      unsupported(fmt::format("model type '{}' (only BPE models are supported)", type));
    const json& vocab = object_field(model, "vocab", "model");
    AO_CHECK(vocab.is_object(), "{}: 'model.vocab' must be an object of piece -> id", name_);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (!get<std::string>(model, key, "", "model").empty())
        unsupported(fmt::format("BPE option 'model.{}'", key));
    tok_->byte_fallback_ = get<bool>(model, "byte_fallback", false, "model");
    tok_->ignore_merges_ = get<bool>(model, "ignore_merges", false, "model");
    tok_->fuse_unk_ = get<bool>(model, "fuse_unk", false, "model");
    unk_piece_ = get<std::string>(model, "unk_token", "", "model");

    auto& pieces = tok_->vocab_.pieces;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      AO_CHECK(it.value().is_number_integer(), "{}: 'model.vocab[\"{}\"]' is not an integer id",
               name_, it.key());
      const int64_t id = it.value().get<int64_t>();
      AO_CHECK(id >= 0 && id < (1 << 24), "{}: 'model.vocab[\"{}\"]' = {} is not a valid id", name_,
               it.key(), id);
      if (static_cast<size_t>(id) >= pieces.size()) pieces.resize(id + 1);
      AO_CHECK(pieces[id].empty(), "{}: id {} is used by both '{}' and '{}'", name_, id, pieces[id],
               it.key());
      pieces[id] = it.key();
    }
    tok_->vocab_.types.assign(pieces.size(), TokenType::normal);
  }

  void read_added_tokens() {
    auto& v = tok_->vocab_;
    if (has(doc_, "added_tokens")) {
      const json& added = doc_["added_tokens"];
      AO_CHECK(added.is_array(), "{}: 'added_tokens' is not an array", name_);
      for (size_t i = 0; i < added.size(); ++i) {
        const json& t = added[i];
        const std::string where = fmt::format("added_tokens[{}]", i);
        AO_CHECK(t.is_object() && has(t, "id") && has(t, "content"),
                 "{}: '{}' needs 'id' and 'content'", name_, where);
        const auto id = get<int64_t>(t, "id", -1, where);
        const auto content = get<std::string>(t, "content", "", where);
        AO_CHECK(id >= 0 && id < (1 << 24), "{}: '{}.id' = {} is not a valid id", name_, where, id);
        AO_CHECK(!content.empty(), "{}: '{}.content' is empty", name_, where);
        if (static_cast<size_t>(id) >= v.pieces.size()) {
          v.pieces.resize(id + 1);
          v.types.resize(id + 1, TokenType::unused);
        }
        AO_CHECK(v.pieces[id].empty() || v.pieces[id] == content,
                 "{}: added token '{}' has id {} which the vocabulary gives to '{}'", name_,
                 content, id, v.pieces[id]);
        v.pieces[id] = content;
        const bool special = get<bool>(t, "special", false, where);
        v.types[id] = special ? TokenType::control : TokenType::user_defined;
        tok_->literals_.add({content, static_cast<int32_t>(id),
                             get<bool>(t, "lstrip", false, where),
                             get<bool>(t, "rstrip", false, where)});
      }
    }
    for (size_t i = 0; i < v.pieces.size(); ++i) {
      if (v.pieces[i].empty())
        v.types[i] = TokenType::unused;  // a hole in the id range
      else if (tok_->byte_fallback_ && parse_byte_piece(v.pieces[i]) >= 0)
        v.types[i] = TokenType::byte;
      if (!unk_piece_.empty() && v.pieces[i] == unk_piece_) {
        v.types[i] = TokenType::unknown;
        tok_->unk_id_ = static_cast<int32_t>(i);
      }
    }
    AO_CHECK(unk_piece_.empty() || tok_->unk_id_ >= 0,
             "{}: 'model.unk_token' '{}' is not in the vocabulary", name_, unk_piece_);
  }

  void read_merges() {
    const json& model = doc_["model"];
    if (!has(model, "merges")) return;
    const json& merges = model["merges"];
    AO_CHECK(merges.is_array(), "{}: 'model.merges' is not an array", name_);
    tok_->merges_.reserve(merges.size());
    std::string merged;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const size_t sp = s.find(' ', 1);
        AO_CHECK(sp != std::string::npos,
                 "{}: merge {} '{}' is not two pieces separated by a space", name_, rank, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", name_, rank);
      }
      const auto ia = tok_->vocab_.find(a), ib = tok_->vocab_.find(b);
      merged = a + b;
      const auto im = tok_->vocab_.find(merged);
      AO_CHECK(ia && ib && im, "{}: merge {} ('{}' + '{}'): '{}' is not in the vocabulary", name_,
               rank, a, b, !ia ? a : (!ib ? b : merged));
      tok_->merges_.emplace(HfTokenizer::merge_key(*ia, *ib),
                            std::pair<int32_t, int32_t>{static_cast<int32_t>(rank), *im});
    }
  }

  std::shared_ptr<Regex> pattern_regex(const json& j, const std::string& where) const {
    const json& pattern = object_field(j, "pattern", where);
    if (has(pattern, "Regex"))
      return std::make_shared<Regex>(get<std::string>(pattern, "Regex", "", where), name_);
    if (has(pattern, "String")) {
      // Escape the literal for PCRE2.
      const std::string lit = get<std::string>(pattern, "String", "", where);
      return std::make_shared<Regex>("\\Q" + lit + "\\E", name_);
    }
    fail("{}: '{}.pattern' needs 'String' or 'Regex'", name_, where);
  }

  void read_normalizer(const json& j, const std::string& where) {
    const std::string type = get<std::string>(j, "type", "", where);
    Normalizer n{};
    if (type == "Sequence") {
      const json& list = object_field(j, "normalizers", where);
      for (size_t i = 0; i < list.size(); ++i)
        read_normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i));
      return;
    } else if (type == "Prepend") {
      n.kind = Normalizer::Kind::prepend;
      n.a = get<std::string>(j, "prepend", "", where);
    } else if (type == "Replace") {
      const json& pattern = object_field(j, "pattern", where);
      n.b = get<std::string>(j, "content", "", where);
      if (has(pattern, "String")) {
        n.kind = Normalizer::Kind::replace_string;
        n.a = get<std::string>(pattern, "String", "", where);
      } else {
        n.kind = Normalizer::Kind::replace_regex;
        n.regex = pattern_regex(j, where);
      }
    } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD" ||
               type == "Lowercase") {
      static const std::unordered_map<std::string, UnicodeForm> forms = {
          {"NFC", UnicodeForm::nfc},
          {"NFD", UnicodeForm::nfd},
          {"NFKC", UnicodeForm::nfkc},
          {"NFKD", UnicodeForm::nfkd},
          {"Lowercase", UnicodeForm::lowercase}};
      n.kind = Normalizer::Kind::unicode;
      n.form = forms.at(type);
    } else if (type == "Strip") {
      n.kind = Normalizer::Kind::strip;
      n.strip_left = get<bool>(j, "left", true, where);
      n.strip_right = get<bool>(j, "right", true, where);
    } else {
      unsupported(fmt::format("normalizer type '{}' at '{}'", type, where));
    }
    tok_->normalizers_.push_back(std::move(n));
  }

  void read_pre_tokenizer(const json& j, const std::string& where) {
    const std::string type = get<std::string>(j, "type", "", where);
    PreTokenizer p{};
    if (type == "Sequence") {
      const json& list = object_field(j, "pretokenizers", where);
      for (size_t i = 0; i < list.size(); ++i)
        read_pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", where, i));
      return;
    } else if (type == "ByteLevel") {
      p.kind = PreTokenizer::Kind::byte_level;
      p.add_prefix_space = get<bool>(j, "add_prefix_space", false, where);
      if (get<bool>(j, "use_regex", true, where))
        p.regex = std::make_shared<Regex>(kGpt2Regex, name_);
      uses_byte_level_ = true;
    } else if (type == "Split") {
      p.kind = PreTokenizer::Kind::split;
      p.regex = pattern_regex(j, where);
      p.invert = get<bool>(j, "invert", false, where);
      const std::string behavior = get<std::string>(j, "behavior", "Isolated", where);
      static const std::unordered_map<std::string, SplitBehavior> behaviors = {
          {"Isolated", SplitBehavior::isolated},
          {"Removed", SplitBehavior::removed},
          {"MergedWithPrevious", SplitBehavior::merged_with_previous},
          {"MergedWithNext", SplitBehavior::merged_with_next},
          {"Contiguous", SplitBehavior::contiguous}};
      auto it = behaviors.find(behavior);
      AO_CHECK(it != behaviors.end(), "{}: '{}.behavior' '{}' is not a known split behavior", name_,
               where, behavior);
      p.behavior = it->second;
    } else if (type == "Digits") {
      p.kind = PreTokenizer::Kind::split;
      p.regex = std::make_shared<Regex>(
          get<bool>(j, "individual_digits", false, where) ? "\\p{N}" : "\\p{N}+", name_);
    } else if (type == "Metaspace") {
      p.kind = PreTokenizer::Kind::metaspace;
      p.replacement = get<std::string>(j, "replacement", std::string(kSpmSpace), where);
      p.split = get<bool>(j, "split", true, where);
      const std::string scheme = get<std::string>(
          j, "prepend_scheme", get<bool>(j, "add_prefix_space", true, where) ? "always" : "never",
          where);
      if (scheme == "always")
        p.prepend = PreTokenizer::Prepend::always;
      else if (scheme == "first")
        p.prepend = PreTokenizer::Prepend::first;
      else if (scheme == "never")
        p.prepend = PreTokenizer::Prepend::never;
      else
        fail("{}: '{}.prepend_scheme' '{}' is not always/first/never", name_, where, scheme);
    } else {
      unsupported(fmt::format("pre-tokenizer type '{}' at '{}'", type, where));
    }
    tok_->pre_tokenizers_.push_back(std::move(p));
  }

  void read_post_processor(const json& j, const std::string& where) {
    const std::string type = get<std::string>(j, "type", "", where);
    if (type == "Sequence") {
      const json& list = object_field(j, "processors", where);
      for (size_t i = 0; i < list.size(); ++i)
        read_post_processor(list[i], fmt::format("{}.processors[{}]", where, i));
    } else if (type == "ByteLevel") {
      // Only adjusts offsets.
    } else if (type == "TemplateProcessing") {
      const json& single = object_field(j, "single", where);
      const json& specials = object_field(j, "special_tokens", where);
      bool after_sequence = false;
      for (const json& item : single) {
        if (has(item, "Sequence")) {
          after_sequence = true;
        } else if (has(item, "SpecialToken")) {
          const std::string id =
              get<std::string>(item["SpecialToken"], "id", "", where + ".single");
          AO_CHECK(has(specials, id.c_str()),
                   "{}: '{}.single' uses special token '{}' missing from special_tokens", name_,
                   where, id);
          for (const json& tid : object_field(specials[id], "ids", where + ".special_tokens")) {
            const auto v = tid.get<int64_t>();
            AO_CHECK(v >= 0 && v < tok_->vocab_.size(),
                     "{}: '{}' special token '{}' has id {} outside the vocabulary", name_, where,
                     id, v);
            (after_sequence ? tok_->suffix_ : tok_->prefix_).push_back(static_cast<int32_t>(v));
          }
        }
      }
    } else {
      unsupported(fmt::format("post-processor type '{}' at '{}'", type, where));
    }
  }

  void read_decoder(const json& j, const std::string& where) {
    const std::string type = get<std::string>(j, "type", "", where);
    if (type == "Sequence") {
      const json& list = object_field(j, "decoders", where);
      for (size_t i = 0; i < list.size(); ++i)
        read_decoder(list[i], fmt::format("{}.decoders[{}]", where, i));
    } else if (type == "ByteLevel") {
      tok_->byte_level_decode_ = true;
    } else if (type == "Strip") {
      if (get<int>(j, "start", 0, where) > 0 && get<std::string>(j, "content", " ", where) == " ")
        tok_->adds_space_prefix_ = true;
    } else if (type == "Metaspace") {
      const std::string scheme = get<std::string>(
          j, "prepend_scheme", get<bool>(j, "add_prefix_space", true, where) ? "always" : "never",
          where);
      if (scheme != "never") tok_->adds_space_prefix_ = true;
    } else if (type == "Replace" || type == "ByteFallback" || type == "Fuse") {
      // The SentencePiece-style decode (▁ -> space, <0xNN> -> byte) covers these.
    } else {
      unsupported(fmt::format("decoder type '{}' at '{}'", type, where));
    }
  }

  void pick_special_ids() {
    auto& t = *tok_;
    auto by_piece = [&](const std::string& piece, const char* what) {
      auto id = t.vocab_.find(piece);
      AO_CHECK(id.has_value(), "{}: {} token '{}' is not in the vocabulary", name_, what, piece);
      return *id;
    };
    if (overrides_.bos_id)
      t.bos_id_ = *overrides_.bos_id;
    else if (overrides_.bos_piece)
      t.bos_id_ = by_piece(*overrides_.bos_piece, "BOS");
    else if (!t.prefix_.empty())
      t.bos_id_ = t.prefix_.front();
    if (overrides_.eos_id)
      t.eos_id_ = *overrides_.eos_id;
    else if (overrides_.eos_piece)
      t.eos_id_ = by_piece(*overrides_.eos_piece, "EOS");
    else
      for (const char* name :
           {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>"})
        if (auto id = t.vocab_.find(name); id && t.vocab_.types[*id] == TokenType::control) {
          t.eos_id_ = *id;
          break;
        }
    // A template without BOS (Qwen2) still lets callers ask for add_bos; without a template
    // add_bos prepends the BOS token if there is one.
    t.default_add_bos_ = !t.prefix_.empty();
    if (overrides_.add_bos) t.default_add_bos_ = *overrides_.add_bos;
    if (t.prefix_.empty() && t.suffix_.empty() && t.bos_id_ >= 0 && !has(doc_, "post_processor"))
      t.prefix_.push_back(t.bos_id_);
  }

  const json& doc_;
  std::string name_;
  SpecialTokenOverrides overrides_;
  std::unique_ptr<HfTokenizer> tok_;
  std::string unk_piece_;
  bool uses_byte_level_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> build_hf_tokenizer(const nlohmann::json& doc, const std::string& name,
                                              const SpecialTokenOverrides& overrides) {
  try {
    return HfBuilder(doc, name, overrides).build();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unexpected JSON structure: {}", name, e.what());
  }
}

}  // namespace detail

namespace {

nlohmann::json parse_json(std::string_view text, const std::string& name) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: malformed JSON: {}", name, e.what());
  }
}

std::optional<std::string> config_token(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& name,
                                              std::string_view config_json_text) {
  const std::string what = fmt::format("tokenizer.json '{}'", name);
  const nlohmann::json doc = parse_json(json_text, what);
  detail::SpecialTokenOverrides overrides;
  if (!config_json_text.empty()) {
    const nlohmann::json config =
        parse_json(config_json_text, fmt::format("tokenizer_config.json for '{}'", name));
    overrides.bos_piece = config_token(config, "bos_token");
    overrides.eos_piece = config_token(config, "eos_token");
    if (config.is_object() && config.contains("add_bos_token") &&
        config["add_bos_token"].is_boolean())
      overrides.add_bos = config["add_bos_token"].get<bool>();
  }
  return detail::build_hf_tokenizer(doc, what, overrides);
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json_path,
                                             const std::string& config_path) {
  const std::string text = read_text_file(tokenizer_json_path);
  const std::string config = config_path.empty() ? std::string() : read_text_file(config_path);
  return parse_hf_tokenizer(text, tokenizer_json_path, config);
}

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& encoder_json_path,
                                               const std::string& vocab_bpe_path) {
  const std::string what = fmt::format("GPT-2 vocabulary '{}'", encoder_json_path);
  nlohmann::json encoder = parse_json(read_text_file(encoder_json_path), what);
  AO_CHECK(encoder.is_object(), "{}: expected an object of piece -> id", what);
  const std::string bpe = read_text_file(vocab_bpe_path);
  nlohmann::json merges = nlohmann::json::array();
  size_t pos = 0, line_no = 0;
  while (pos < bpe.size()) {
    size_t end = bpe.find('\n', pos);
    if (end == std::string::npos) end = bpe.size();
    std::string line = bpe.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    AO_CHECK(line.find(' ', 1) != std::string::npos,
             "GPT-2 merges '{}': line {} '{}' is not two pieces", vocab_bpe_path, line_no, line);
    merges.push_back(std::move(line));
  }
  nlohmann::json doc = {
      {"model", {{"type", "BPE"}, {"vocab", std::move(encoder)}, {"merges", std::move(merges)}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
  };
  detail::SpecialTokenOverrides overrides;
  if (doc["model"]["vocab"].contains("<|endoftext|>")) {
    const int64_t id = doc["model"]["vocab"]["<|endoftext|>"].get<int64_t>();
    doc["added_tokens"] = {{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}}};
    overrides.bos_id = overrides.eos_id = static_cast<int32_t>(id);
  }
  return detail::build_hf_tokenizer(doc, what, overrides);
}

}  // namespace ao::text

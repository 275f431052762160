#include "ao/text/tokenizer.h"

#include <cstring>
#include <filesystem>

#include "ao/core/error.h"
#include "ao/core/mmap.h"
#include "text/spm_tokenizer.h"
#include "text/unicode.h"

namespace ao::text {

namespace fs = std::filesystem;

void Tokenizer::check_id(int32_t id) const {
  AO_CHECK(id >= 0 && id < vocab_size(), "{}: token id {} out of range [0, {})", description_, id,
           vocab_size());
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (const int32_t id : ids) {
    if (skip_special && is_special(id)) {
      check_id(id);
      continue;
    }
    std::string bytes = token_bytes(id);
    if (at_start && adds_space_prefix_ && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
    at_start = false;
    out += bytes;
  }
  return detail::utf8_sanitize(out);
}

std::string TokenStreamDecoder::push(int32_t id) {
  if (tokenizer_->is_special(id)) return {};
  std::string bytes = tokenizer_->token_bytes(id);
  if (at_start_ && tokenizer_->adds_space_prefix() && !bytes.empty() && bytes[0] == ' ')
    bytes.erase(0, 1);
  at_start_ = false;
  pending_ += bytes;
  const size_t n = detail::utf8_complete_prefix(pending_);
  std::string ready = detail::utf8_sanitize(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return ready;
}

std::string TokenStreamDecoder::finish() {
  std::string rest = detail::utf8_sanitize(pending_);
  pending_.clear();
  return rest;
}

void check_tokenizer_fits_model(const Tokenizer& tokenizer, int64_t model_vocab_size,
                                const std::string& model_name) {
  AO_CHECK(tokenizer.vocab_size() <= model_vocab_size,
           "tokenizer {} has {} tokens but model '{}' has a vocabulary of {}: they do not belong "
           "together",
           tokenizer.description(), tokenizer.vocab_size(), model_name, model_vocab_size);
  for (const int32_t id : {tokenizer.bos_id(), tokenizer.eos_id()})
    AO_CHECK(id < model_vocab_size,
             "tokenizer {}: special token id {} is outside the vocabulary of model '{}' ({})",
             tokenizer.description(), id, model_name, model_vocab_size);
}

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path) {
  auto file = MappedFile::open(path);
  const uint8_t* p = file->data();
  const size_t size = file->size();
  size_t pos = 0;
  auto read_i32 = [&](const char* what, size_t index) {
    AO_CHECK(pos + 4 <= size,
             "llama2.c tokenizer '{}': truncated at byte {} while reading the {} of token {}", path,
             pos, what, index);
    int32_t v;
    std::memcpy(&v, p + pos, 4);
    pos += 4;
    return v;
  };
  AO_CHECK(size >= 4, "llama2.c tokenizer '{}': file has {} bytes, too short for the header", path,
           size);
  int32_t max_len;
  std::memcpy(&max_len, p, 4);
  pos = 4;
  AO_CHECK(max_len > 0 && max_len <= 4096,
           "llama2.c tokenizer '{}': max_token_length {} is not in [1, 4096]", path, max_len);
  detail::Vocab vocab;
  while (pos < size) {
    const size_t index = vocab.pieces.size();
    const int32_t score_bits = read_i32("score", index);
    float score;
    std::memcpy(&score, &score_bits, 4);
    const int32_t len = read_i32("length", index);
    AO_CHECK(len >= 0 && len <= max_len,
             "llama2.c tokenizer '{}': token {} has length {}, expected 0..{}", path, index, len,
             max_len);
    AO_CHECK(
        pos + static_cast<size_t>(len) <= size,
        "llama2.c tokenizer '{}': truncated: token {} needs {} bytes at offset {}, file has {}",
        path, index, len, pos, size);
    std::string piece(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    vocab.pieces.push_back(detail::replace_all(piece, " ", detail::kSpmSpace));
    vocab.scores.push_back(score);
  }
  AO_CHECK(vocab.pieces.size() >= 3,
           "llama2.c tokenizer '{}': only {} tokens, expected <unk>, BOS, EOS and more", path,
           vocab.pieces.size());
  // llama2.c files carry no token types: ids 0/1/2 are <unk>/BOS/EOS as in every llama2.c
  // export, <0xNN> pieces are byte fallbacks.
  vocab.types.assign(vocab.pieces.size(), TokenType::normal);
  vocab.types[0] = TokenType::unknown;
  vocab.types[1] = TokenType::control;
  vocab.types[2] = TokenType::control;
  for (size_t i = 3; i < vocab.pieces.size(); ++i)
    if (detail::parse_byte_piece(vocab.pieces[i]) >= 0) vocab.types[i] = TokenType::byte;
  const std::string desc = fmt::format("llama2.c tokenizer '{}' ({} tokens)",
                                       fs::path(path).filename().string(), vocab.pieces.size());
  return std::make_unique<detail::SpmTokenizer>(std::move(vocab), 1, 2, 0, true, desc);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json")) {
      const fs::path config = p / "tokenizer_config.json";
      return load_hf_tokenizer((p / "tokenizer.json").string(),
                               fs::exists(config) ? config.string() : "");
    }
    if (fs::exists(p / "tokenizer.model"))
      return load_sentencepiece_tokenizer((p / "tokenizer.model").string());
    if (fs::exists(p / "encoder.json") && fs::exists(p / "vocab.bpe"))
      return load_gpt2_tokenizer((p / "encoder.json").string(), (p / "vocab.bpe").string());
    if (fs::exists(p / "tokenizer.bin"))
      return load_llama2c_tokenizer((p / "tokenizer.bin").string());
    fail(
        "'{}': folder has no tokenizer.json, tokenizer.model, encoder.json + vocab.bpe or "
        "tokenizer.bin",
        path);
  }
  AO_CHECK(fs::exists(p, ec), "tokenizer '{}': no such file or folder", path);
  const std::string ext = p.extension().string();
  if (ext == ".json") {
    if (p.filename() == "encoder.json" && fs::exists(p.parent_path() / "vocab.bpe"))
      return load_gpt2_tokenizer(path, (p.parent_path() / "vocab.bpe").string());
    const fs::path config = p.parent_path() / "tokenizer_config.json";
    return load_hf_tokenizer(path, fs::exists(config) ? config.string() : "");
  }
  if (ext == ".model") return load_sentencepiece_tokenizer(path);
  if (ext == ".gguf") return load_gguf_tokenizer(path);
  if (ext == ".bin") return load_llama2c_tokenizer(path);
  fail(
      "tokenizer '{}': unknown kind; expected a folder, tokenizer.json, *.model, *.gguf or a "
      "llama2.c *.bin",
      path);
}

}  // namespace ao::text

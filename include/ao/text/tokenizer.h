// Tokenizers: text <-> token ids for SentencePiece models, HF tokenizer.json (byte-level
// and SentencePiece-style BPE), GPT-2 encoder.json + vocab.bpe, llama2.c tok*.bin and the
// vocabulary of GGUF files. load_tokenizer() picks the right one for a path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ao::text {

// Role of a vocabulary entry (the SentencePiece / GGUF classification).
enum class TokenType : uint8_t {
  normal,        // ordinary piece produced by the BPE model
  unknown,       // <unk>
  control,       // BOS, EOS, chat markers: never produced from plain text, decoded as ""
  user_defined,  // added token matched literally in the text (never split by BPE)
  unused,
  byte,  // <0xNN> byte-fallback piece
};

struct EncodeOptions {
  bool add_bos = false;        // prepend BOS (and any other prefix/suffix the tokenizer's
                               // template adds, e.g. a tokenizer.json TemplateProcessing)
  bool parse_special = false;  // recognise control tokens such as "<|im_end|>" in the text
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> encode(std::string_view text,
                                      const EncodeOptions& options) const = 0;
  std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const {
    return encode(text, EncodeOptions{.add_bos = add_bos});
  }

  // The text of a sequence. Control tokens are skipped unless `skip_special` is false;
  // SentencePiece-style tokenizers drop the leading space their encoder prepended.
  // Invalid UTF-8 produced by stray byte tokens is replaced by U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special = true) const;

  // The raw bytes one token stands for ("▁the" -> " the", "<0x0A>" -> "\n", GPT-2 "Ġthe"
  // -> " the"); may be a fragment of a UTF-8 sequence. Control tokens give their text.
  // Use TokenStreamDecoder to stream text token by token.
  virtual std::string token_bytes(int32_t id) const = 0;

  // The vocabulary entry as stored ("▁the", "<0x0A>", "Ġthe", "<s>").
  virtual const std::string& piece(int32_t id) const = 0;
  virtual std::optional<int32_t> piece_to_id(std::string_view piece) const = 0;
  virtual TokenType token_type(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;

  int32_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
  int32_t eos_id() const { return eos_id_; }  // -1 when the tokenizer has none
  int32_t unk_id() const { return unk_id_; }  // -1 when the tokenizer has none
  // True when the encoder prepends a space to the text (SentencePiece dummy prefix); decode
  // then removes the space from the first token.
  bool adds_space_prefix() const { return adds_space_prefix_; }
  // Whether prompts for this model family start with BOS (Llama: yes; GPT-2, Qwen2: no), as
  // the tokenizer file says it (tokenizer.json template, GGUF add_bos_token). Model loaders
  // may override it from the model's own config.
  bool default_add_bos() const { return default_add_bos_; }
  void set_default_add_bos(bool add) { default_add_bos_ = add; }
  // A short description: "llama2.c tok512.bin (512 tokens)", "tokenizer.json BPE (byte-level)".
  const std::string& description() const { return description_; }

  bool is_special(int32_t id) const {
    const TokenType t = token_type(id);
    return t == TokenType::control || t == TokenType::unknown;
  }

 protected:
  void check_id(int32_t id) const;  // throws ao::Error for ids outside [0, vocab_size)

  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  bool adds_space_prefix_ = false;
  bool default_add_bos_ = false;
  std::string description_;
};

// Turns a stream of token ids into text as it is generated: holds back bytes of an
// incomplete UTF-8 character until the rest arrives, removes the SentencePiece dummy-prefix
// space at the start and skips control tokens.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::string push(int32_t id);  // the text that became complete with this token
  std::string finish();          // whatever is still held back (malformed bytes -> U+FFFD)

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
  bool at_start_ = true;
};

// Throws ao::Error naming both when `tokenizer` has more tokens than the model has embedding
// rows (`model_vocab_size`); a model whose vocabulary is padded beyond the tokenizer's is fine.
void check_tokenizer_fits_model(const Tokenizer& tokenizer, int64_t model_vocab_size,
                                const std::string& model_name);

// Picks the tokenizer by path:
//   folder            -> tokenizer.json (+ tokenizer_config.json), else tokenizer.model,
//                        else encoder.json + vocab.bpe, else tokenizer.bin
//   *.json            -> HF tokenizer.json
//   *.model           -> SentencePiece model
//   *.gguf            -> the vocabulary stored in a GGUF file
//   *.bin             -> llama2.c tokenizer
// Throws ao::Error naming the path when it is none of those or is malformed.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
// `config_path` (tokenizer_config.json, may be empty) supplies bos/eos names when present.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json_path,
                                             const std::string& config_path = "");
// The same from memory; `name` is used in error messages.
std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& name,
                                              std::string_view config_json_text = "");
std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& encoder_json_path,
                                               const std::string& vocab_bpe_path);
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);

}  // namespace ao::text

// SentencePiece-style BPE over a scored vocabulary, as llama2.c's run.c and llama.cpp's SPM
// tokenizer do it: spaces become "▁", a "▁" is prepended, adjacent pieces are merged by
// highest score, characters outside the vocabulary fall back to <0xNN> byte tokens.
// Used for llama2.c tok*.bin files and GGUF files with tokenizer.ggml.model = "llama".
#pragma once

#include "text/vocab.h"

namespace ao::text::detail {

class SpmTokenizer : public VocabTokenizer {
 public:
  // `vocab` must have pieces (with "▁" for spaces), types and scores.
  SpmTokenizer(Vocab vocab, int32_t bos, int32_t eos, int32_t unk, bool add_space_prefix,
               std::string description);

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const override;
  std::string token_bytes(int32_t id) const override;

 private:
  void encode_text(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const;
  LiteralSplitter literals_;  // control and user-defined tokens
};

}  // namespace ao::text::detail

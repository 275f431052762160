// Hugging Face tokenizer.json pipelines with a BPE model (internal): normalizers,
// pre-tokenizers, ranked merges with byte fallback, added tokens and the BOS template.
// GPT-2 encoder.json + vocab.bpe and GGUF "gpt2" vocabularies are turned into the same
// JSON document and go through the same code.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "ao/text/tokenizer.h"

namespace ao::text::detail {

struct SpecialTokenOverrides {
  std::optional<std::string> bos_piece, eos_piece;  // from tokenizer_config.json
  std::optional<int32_t> bos_id, eos_id;            // from GGUF metadata
  std::optional<bool> add_bos;                      // tokenizer_config.json / GGUF add_bos_token
};

// `name` names the source in error messages ("tokenizer.json '/path/tokenizer.json'").
std::unique_ptr<Tokenizer> build_hf_tokenizer(const nlohmann::json& doc, const std::string& name,
                                              const SpecialTokenOverrides& overrides);

// Pre-tokenizer regexes of well-known byte-level BPE vocabularies.
inline constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace ao::text::detail

// The vocabulary stored in a GGUF file (tokenizer.ggml.*): "llama" (SentencePiece-style,
// scored) and "gpt2" (byte-level BPE with merges) models.
#include <filesystem>

#include "ao/core/error.h"
#include "ao/io/gguf.h"
#include "text/hf_tokenizer.h"
#include "text/spm_tokenizer.h"

namespace ao::text {

namespace {

TokenType gguf_token_type(int64_t t) {
  switch (t) {
    case 2:
      return TokenType::unknown;
    case 3:
      return TokenType::control;
    case 4:
      return TokenType::user_defined;
    case 5:
      return TokenType::unused;
    case 6:
      return TokenType::byte;
    default:
      return TokenType::normal;
  }
}

const char* pre_tokenizer_regex(const std::string& pre, const std::string& file) {
  if (pre.empty() || pre == "default" || pre == "gpt-2") return detail::kGpt2Regex;
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") return detail::kLlama3Regex;
  if (pre == "qwen2") return detail::kQwen2Regex;
  throw NotSupported(fmt::format(
      "GGUF file '{}': tokenizer.ggml.pre '{}' (supported: gpt-2, llama-bpe, qwen2)", file, pre));
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  const GgufFile gguf = GgufFile::open(path);
  const std::string model = gguf.get_string("tokenizer.ggml.model", "");
  AO_CHECK(!model.empty(),
           "GGUF file '{}': no tokenizer (metadata 'tokenizer.ggml.model' is missing)", path);
  std::vector<std::string> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  AO_CHECK(n > 0, "GGUF file '{}': 'tokenizer.ggml.tokens' is empty", path);
  std::vector<TokenType> types(n, TokenType::normal);
  if (gguf.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> raw = gguf.get_int_array("tokenizer.ggml.token_type");
    AO_CHECK(raw.size() == n, "GGUF file '{}': {} token types for {} tokens", path, raw.size(), n);
    for (size_t i = 0; i < n; ++i) types[i] = gguf_token_type(raw[i]);
  }
  auto token_id = [&](const char* key) -> int32_t {
    const int64_t id = gguf.get_int(key, -1);
    AO_CHECK(id >= -1 && id < static_cast<int64_t>(n),
             "GGUF file '{}': '{}' = {} is outside the vocabulary of {}", path, key, id, n);
    return static_cast<int32_t>(id);
  };
  const std::string desc = fmt::format("GGUF vocabulary '{}' ({}, {} tokens)",
                                       std::filesystem::path(path).filename().string(), model, n);

  if (model == "llama") {
    detail::Vocab vocab;
    vocab.pieces = std::move(tokens);
    vocab.types = std::move(types);
    if (gguf.has("tokenizer.ggml.scores")) {
      const std::vector<double> scores = gguf.get_number_array("tokenizer.ggml.scores");
      AO_CHECK(scores.size() == n, "GGUF file '{}': {} scores for {} tokens", path, scores.size(),
               n);
      vocab.scores.assign(scores.begin(), scores.end());
    } else {
      vocab.scores.assign(n, 0.0f);
    }
    const int32_t bos = token_id("tokenizer.ggml.bos_token_id");
    const int32_t eos = token_id("tokenizer.ggml.eos_token_id");
    const int32_t unk = token_id("tokenizer.ggml.unknown_token_id");
    const bool prefix = gguf.get_bool("tokenizer.ggml.add_space_prefix", true);
    auto tok =
        std::make_unique<detail::SpmTokenizer>(std::move(vocab), bos, eos, unk, prefix, desc);
    tok->set_default_add_bos(gguf.get_bool("tokenizer.ggml.add_bos_token", bos >= 0));
    return tok;
  }
  if (model == "gpt2") {
    nlohmann::json vocab = nlohmann::json::object();
    nlohmann::json added = nlohmann::json::array();
    for (size_t i = 0; i < n; ++i) {
      if (types[i] == TokenType::control || types[i] == TokenType::user_defined)
        added.push_back(
            {{"id", i}, {"content", tokens[i]}, {"special", types[i] == TokenType::control}});
      else
        vocab[tokens[i]] = i;
    }
    nlohmann::json merges = gguf.has("tokenizer.ggml.merges")
                                ? nlohmann::json(gguf.get_string_array("tokenizer.ggml.merges"))
                                : nlohmann::json::array();
    const std::string pre = gguf.get_string("tokenizer.ggml.pre", "default");
    nlohmann::json doc = {
        {"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}},
        {"added_tokens", std::move(added)},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", pre_tokenizer_regex(pre, path)}}},
             {"behavior", "Isolated"}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
        {"decoder", {{"type", "ByteLevel"}}},
    };
    detail::SpecialTokenOverrides overrides;
    if (const int32_t bos = token_id("tokenizer.ggml.bos_token_id"); bos >= 0)
      overrides.bos_id = bos;
    if (const int32_t eos = token_id("tokenizer.ggml.eos_token_id"); eos >= 0)
      overrides.eos_id = eos;
    overrides.add_bos = gguf.get_bool("tokenizer.ggml.add_bos_token", false);
    return detail::build_hf_tokenizer(doc, desc, overrides);
  }
  throw NotSupported(
      fmt::format("GGUF file '{}': tokenizer model '{}' (supported: llama, gpt2)", path, model));
}

}  // namespace ao::text

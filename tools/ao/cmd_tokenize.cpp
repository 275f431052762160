// ao tokenize -m PATH -p TEXT — token ids and pieces of a text, as the model's tokenizer sees it.
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "ao/core/mmap.h"
#include "ao/io/model_files.h"
#include "ao/text/tokenizer.h"
#include "command.h"

namespace ao::cli {
namespace {

struct TokenizeArgs {
  std::string model, prompt, file;
  bool bos = false, no_bos = false, special = false, json = false, ids_only = false;
};

int run_tokenize(const TokenizeArgs& a) {
  // A model (folder / .bin / .safetensors) or a tokenizer file itself.
  std::string tok_path = a.model;
  const bool is_tokenizer_file = a.model.ends_with(".json") || a.model.ends_with(".model") ||
                                 a.model.ends_with(".gguf") ||
                                 std::filesystem::path(a.model).filename().string().starts_with("tok");
  if (!is_tokenizer_file) {
    io::ModelFiles m = io::open_model_files(a.model);
    AO_CHECK(!m.tokenizer_path.empty(), "{}: no tokenizer found next to the model", a.model);
    tok_path = m.tokenizer_path;
  }
  auto tok = text::load_tokenizer(tok_path);
  AO_CHECK(a.prompt.empty() != a.file.empty(), "give exactly one of --prompt and --file");
  const std::string text = a.file.empty() ? a.prompt : read_text_file(a.file);
  text::EncodeOptions opt;
  opt.add_bos = a.bos ? true : a.no_bos ? false : tok->default_add_bos();
  opt.parse_special = a.special;
  const std::vector<int32_t> ids = tok->encode(text, opt);
  if (a.json) {
    nlohmann::json j = {{"tokenizer", tok_path}, {"n_tokens", ids.size()}, {"ids", ids}};
    fmt::print("{}\n", j.dump());
    return 0;
  }
  if (a.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) fmt::print("{}{}", i ? " " : "", ids[i]);
    fmt::print("\n");
    return 0;
  }
  fmt::print("| # | id | piece |\n|---:|---:|---|\n");
  for (size_t i = 0; i < ids.size(); ++i) {
    nlohmann::json piece = tok->piece(ids[i]);  // JSON-escape control bytes
    fmt::print("| {} | {} | {} |\n", i, ids[i], piece.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  fmt::print("\n{} tokens ({})\n", ids.size(), tok_path);
  return 0;
}

const bool registered = register_command(
    {"tokenize", "Show the token ids and pieces of a text", 15, [](CLI::App* sub) {
       auto a = std::make_shared<TokenizeArgs>();
       sub->add_option("-m,--model", a->model, "model (folder, .bin, .safetensors) or tokenizer file")->required();
       sub->add_option("-p,--prompt", a->prompt, "text to tokenize");
       sub->add_option("-f,--file", a->file, "file to tokenize");
       sub->add_flag("--bos", a->bos, "prepend BOS");
       sub->add_flag("--no-bos", a->no_bos, "do not prepend BOS (default: the tokenizer's own setting)");
       sub->add_flag("--special", a->special, "parse special tokens such as <|im_end|> in the text");
       sub->add_flag("--ids", a->ids_only, "print only the ids");
       sub->add_flag("--json", a->json, "print JSON");
       return [a] { return run_tokenize(*a); };
     }});

}  // namespace
}  // namespace ao::cli

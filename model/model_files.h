// Opening what a user names as MODEL (CLI, recipes, serve): a Hugging Face
// directory (config.json + safetensors + tokenizer.json) or a GGUF file
// (weights, tokenizer and chat template in one file). Errors name the path.
#ifndef RETORT_MODEL_MODEL_FILES_H_
#define RETORT_MODEL_MODEL_FILES_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "model/transformer.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

// Loads MODEL/tokenizer.json (or MODEL itself when it is a tokenizer.json
// file) and the special tokens of MODEL/tokenizer_config.json when present;
// for a .gguf, the tokenizer.ggml.* vocabulary.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_path);

// The engine for MODEL: an HF directory, or a GGUF file whose weights stay
// quantized.
absl::StatusOr<std::unique_ptr<Transformer>> LoadEngine(const std::string& model_path);

// The engine for MODEL with every weight in a float type (f32, bf16, f16),
// for passes that change weights (prune): weights stored in other types (a
// GGUF's ggml blocks, a quantized checkpoint's linears) are dequantized to
// f32, as `distill` reads a GGUF student. `dequantized`, when not null, gets
// the stored types that were dequantized ("Q4_1, Q8_0"); empty when none.
absl::StatusOr<std::unique_ptr<Transformer>> LoadFloatEngine(const std::string& model_path,
                                                             std::string* dequantized);

// Reads a whole text file; an empty file is an error naming it.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, const std::string& what);

// Parses a chat given as a file path or an inline JSON string: either an array
// of {"role","content"} messages or an object with a "messages" array.
absl::StatusOr<nlohmann::json> ReadChat(const std::string& file_or_json);

// MODEL's own chat template (tokenizer_config.json "chat_template", or
// chat_template.jinja; a GGUF's tokenizer.chat_template), with the special
// tokens (bos_token, eos_token) it may refer to.
absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& model_path);

// The tokenizer files a saved copy of MODEL needs (name -> contents): copied
// from an HF directory (tokenizer.json, tokenizer_config.json, ...), rebuilt
// from a GGUF's vocabulary and chat template.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> TokenizerFiles(
    const std::string& model_path);

// Renders a chat (see ReadChat) with MODEL's own chat template
// (tokenizer_config.json "chat_template", or chat_template.jinja; a GGUF's
// tokenizer.chat_template).
absl::StatusOr<std::string> RenderChat(const std::string& model_path, const std::string& chat_arg,
                                       bool add_generation_prompt);

// Where a command's input text comes from: exactly one of an inline string,
// a file, or a chat rendered with MODEL's template.
struct TextSource {
  std::string inline_text;
  bool has_inline = false;
  std::string file;
  std::string chat;
  bool add_generation_prompt = false;
  bool add_special_tokens = true;
};

// Reads / renders the text and tokenizes it. A rendered chat never gets a
// second BOS from the tokenizer when its template already wrote one.
absl::StatusOr<std::vector<int32_t>> TokenizeSource(const std::string& model_path,
                                                    const Tokenizer& tokenizer,
                                                    const TextSource& source,
                                                    const std::string& what);

// Parses "f32", "bf16", "f16" (any case).
absl::StatusOr<DType> ParseWeightDType(const std::string& name);

}  // namespace retort

#endif  // RETORT_MODEL_MODEL_FILES_H_

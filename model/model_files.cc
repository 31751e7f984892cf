#include "model/model_files.h"

#include <filesystem>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/quant_matrix.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "model/gguf_model.h"
#include "text/chat_template.h"

namespace retort {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_path) {
  std::error_code ec;
  if (!fs::exists(model_path, ec))
    return absl::NotFoundError(absl::StrCat(model_path, ": no such file or directory"));
  if (fs::is_regular_file(model_path, ec) && IsGgufFile(model_path)) {
    ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(model_path));
    ASSIGN_OR_RETURN(TokenizerParts parts, TokenizerPartsFromGguf(*reader));
    auto tokenizer = Tokenizer::FromParts(parts);
    if (!tokenizer.ok()) {
      return absl::Status(tokenizer.status().code(),
                          absl::StrCat(model_path, ": ", tokenizer.status().message()));
    }
    return tokenizer;
  }
  std::string json_path = model_path;
  std::string config_path;
  if (fs::is_directory(model_path, ec)) {
    json_path = (fs::path(model_path) / "tokenizer.json").string();
    if (!fs::exists(json_path, ec)) {
      return absl::NotFoundError(
          absl::StrCat(model_path, ": no tokenizer.json in the model directory"));
    }
    config_path = (fs::path(model_path) / "tokenizer_config.json").string();
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromFile(json_path));
  if (!config_path.empty() && fs::exists(config_path, ec)) {
    RETURN_IF_ERROR(tokenizer->LoadSpecialTokensFromConfig(config_path));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Transformer>> LoadEngine(const std::string& model_path) {
  std::error_code ec;
  if (fs::is_regular_file(model_path, ec) && IsGgufFile(model_path))
    return LoadGgufTransformer(model_path);
  return Transformer::Load(model_path);
}

absl::StatusOr<std::unique_ptr<Transformer>> LoadFloatEngine(const std::string& model_path,
                                                             std::string* dequantized) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> engine, LoadEngine(model_path));
  auto is_float = [](DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; };
  std::set<std::string> types;
  for (const auto& [name, t] : engine->NamedWeights()) {
    if (!is_float(t.dtype())) types.insert(std::string(DTypeName(t.dtype())));
  }
  if (!engine->QuantizedWeights().empty()) types.insert("quantized linears");
  if (dequantized != nullptr) *dequantized = absl::StrJoin(types, ", ");
  if (types.empty()) return engine;
  std::vector<std::pair<std::string, Tensor>> weights;
  weights.reserve(engine->NamedWeights().size() + engine->QuantizedWeights().size());
  for (const auto& [name, t] : engine->NamedWeights()) {
    weights.emplace_back(name, is_float(t.dtype()) ? t : t.To(DType::kF32));
  }
  for (const auto& [name, q] : engine->QuantizedWeights()) {
    weights.emplace_back(name, Dequantize(*q, DType::kF32));
  }
  return Transformer::FromNamedWeights(engine->config(), weights, model_path);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path, const std::string& what) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  if (text.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what, " file is empty"));
  return text;
}

absl::StatusOr<nlohmann::json> ReadChat(const std::string& file_or_json) {
  std::string text = file_or_json;
  std::string source = "--chat";
  std::error_code ec;
  bool looks_inline = !text.empty() && (text.front() == '[' || text.front() == '{');
  if (!looks_inline) {
    ASSIGN_OR_RETURN(text, ReadTextFile(file_or_json, "chat"));
    source = file_or_json;
  }
  absl::StatusOr<nlohmann::json> parsed = ParseJson(text, source);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": chat is not valid JSON (", parsed.status().message(), ")"));
  }
  nlohmann::json chat = *std::move(parsed);
  if (chat.is_object() && chat.contains("messages")) chat = chat["messages"];
  if (!chat.is_array() || chat.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a non-empty array of {\"role\", \"content\"} messages"));
  }
  for (size_t i = 0; i < chat.size(); ++i) {
    const auto& m = chat[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": message ", i, " has no string \"role\""));
    }
  }
  return chat;
}

absl::StatusOr<ChatTemplate> LoadChatTemplate(const std::string& model_path) {
  std::error_code ec;
  if (fs::is_regular_file(model_path, ec) && IsGgufFile(model_path)) {
    ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(model_path));
    if (reader->Find("tokenizer.chat_template") == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(model_path, ": no tokenizer.chat_template in the GGUF metadata"));
    }
    ASSIGN_OR_RETURN(std::string source, reader->GetString("tokenizer.chat_template"));
    ASSIGN_OR_RETURN(ChatTemplate tmpl, ChatTemplate::Parse(source));
    ASSIGN_OR_RETURN(TokenizerParts parts, TokenizerPartsFromGguf(*reader));
    nlohmann::ordered_json special = nlohmann::ordered_json::object();
    auto piece = [&](int32_t id) {
      return id >= 0 && id < static_cast<int32_t>(parts.tokens.size());
    };
    if (piece(parts.bos_id)) special["bos_token"] = parts.tokens[parts.bos_id];
    if (piece(parts.eos_id)) special["eos_token"] = parts.tokens[parts.eos_id];
    tmpl.SetSpecialTokens(special);
    return tmpl;
  }
  fs::path config = fs::path(model_path) / "tokenizer_config.json";
  if (!fs::is_directory(model_path, ec) || !fs::exists(config, ec)) {
    return absl::NotFoundError(absl::StrCat(
        model_path, ": no tokenizer_config.json with a chat_template in the model directory"));
  }
  return ChatTemplate::FromTokenizerConfig(config.string());
}

absl::StatusOr<std::string> RenderChat(const std::string& model_path, const std::string& chat_arg,
                                       bool add_generation_prompt) {
  ASSIGN_OR_RETURN(nlohmann::json chat, ReadChat(chat_arg));
  ASSIGN_OR_RETURN(ChatTemplate tmpl, LoadChatTemplate(model_path));
  return tmpl.Render(chat, add_generation_prompt, nlohmann::json::object());
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> TokenizerFiles(
    const std::string& model_path) {
  std::vector<std::pair<std::string, std::string>> files;
  std::error_code ec;
  if (fs::is_regular_file(model_path, ec) && IsGgufFile(model_path)) {
    ASSIGN_OR_RETURN(std::unique_ptr<GgufReader> reader, GgufReader::Open(model_path));
    ASSIGN_OR_RETURN(TokenizerParts parts, TokenizerPartsFromGguf(*reader));
    std::string chat_template;
    if (reader->Find("tokenizer.chat_template") != nullptr) {
      ASSIGN_OR_RETURN(chat_template, reader->GetString("tokenizer.chat_template"));
    }
    ASSIGN_OR_RETURN(nlohmann::ordered_json tok, HfTokenizerJsonFromParts(parts));
    files.emplace_back("tokenizer.json",
                       tok.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    files.emplace_back("tokenizer_config.json",
                       HfTokenizerConfigFromParts(parts, chat_template)
                               .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                           "\n");
    return files;
  }
  if (!fs::is_directory(model_path, ec)) {
    return absl::NotFoundError(absl::StrCat(model_path, ": not a model directory or GGUF file"));
  }
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json", "chat_template.jinja"}) {
    const fs::path p = fs::path(model_path) / name;
    if (!fs::exists(p, ec)) continue;
    ASSIGN_OR_RETURN(std::string contents, ReadFileToString(p.string()));
    files.emplace_back(name, std::move(contents));
  }
  return files;
}

absl::StatusOr<std::vector<int32_t>> TokenizeSource(const std::string& model_path,
                                                    const Tokenizer& tokenizer,
                                                    const TextSource& source,
                                                    const std::string& what) {
  std::string text = source.inline_text;
  EncodeOptions enc;
  enc.add_special_tokens = source.add_special_tokens;
  if (!source.file.empty()) {
    ASSIGN_OR_RETURN(text, ReadTextFile(source.file, what));
  } else if (!source.chat.empty()) {
    ASSIGN_OR_RETURN(text, RenderChat(model_path, source.chat, source.add_generation_prompt));
    enc.avoid_double_bos = true;
  }
  return tokenizer.Encode(text, enc);
}

absl::StatusOr<DType> ParseWeightDType(const std::string& name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "f32" || n == "float32") return DType::kF32;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "f16" || n == "float16") return DType::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported weight dtype \"", name, "\" (use f32, bf16 or f16)"));
}

}  // namespace retort

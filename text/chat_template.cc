#include "text/chat_template.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"

namespace retort {
namespace {

constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

// transformers: drop null-valued keys of each message, then alias the
// reasoning text under `thinking` (first) and `reasoning_content`.
absl::StatusOr<jinja::Value> PrepareMessages(const jinja::Value& messages) {
  if (!messages.is_list()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat messages must be a JSON array of objects, got ", messages.TypeName()));
  }
  jinja::ValueList out;
  for (size_t i = 0; i < messages.as_list().size(); ++i) {
    const jinja::Value& m = messages.as_list()[i];
    if (!m.is_dict()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat message ", i, " must be a JSON object, got ", m.TypeName()));
    }
    jinja::ValueDict kept;
    for (const auto& [k, v] : m.as_dict().entries) {
      if (!v.is_none()) kept.entries.emplace_back(k, v);
    }
    const jinja::Value* reasoning = nullptr;
    for (const char* field : kReasoningFields) {
      if ((reasoning = kept.Find(field)) != nullptr) break;
    }
    if (reasoning != nullptr) {
      jinja::Value r = *reasoning;
      jinja::ValueDict aliased;
      aliased.entries.emplace_back("thinking", r);
      for (const auto& [k, v] : kept.entries) aliased.Set(k, v);
      aliased.Set("reasoning_content", r);
      kept = std::move(aliased);
    }
    out.push_back(jinja::Value::Dict(std::move(kept)));
  }
  return jinja::Value::List(std::move(out));
}

// A special token in tokenizer_config.json: "text" or {"content": "text", ...}.
std::optional<std::string> TokenText(const nlohmann::ordered_json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(const std::string& source) {
  absl::StatusOr<jinja::Template> t = jinja::Template::Parse(source);
  if (!t.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", t.status().message()));
  }
  ChatTemplate ct;
  ct.source_ = source;
  ct.template_ = *std::move(t);
  return ct;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(const std::string& path,
                                                               const std::string& name) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<nlohmann::ordered_json> parsed = ParseOrderedJson(*text, path);
  if (!parsed.ok()) return parsed.status();
  nlohmann::ordered_json config = *std::move(parsed);
  if (!config.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));

  std::string source;
  bool found = false;
  std::filesystem::path jinja_file =
      std::filesystem::path(path).parent_path() / "chat_template.jinja";
  std::error_code ec;
  if (name.empty() && std::filesystem::is_regular_file(jinja_file, ec)) {
    absl::StatusOr<std::string> t = ReadFileToString(jinja_file.string());
    if (!t.ok()) return t.status();
    source = *std::move(t);
    found = true;
  } else if (config.contains("chat_template")) {
    const nlohmann::ordered_json& ct = config["chat_template"];
    const std::string want = name.empty() ? "default" : name;
    if (ct.is_string()) {
      if (!name.empty() && name != "default") {
        return absl::NotFoundError(
            absl::StrCat(path, ": chat_template is a single template, no '", name, "'"));
      }
      source = ct.get<std::string>();
      found = true;
    } else if (ct.is_array()) {
      std::string names;
      for (const auto& entry : ct) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
            !entry["name"].is_string() || !entry["template"].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(
              path, ": chat_template list entries must be {\"name\": str, \"template\": str}"));
        }
        names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
        if (entry["name"].get<std::string>() == want) {
          source = entry["template"].get<std::string>();
          found = true;
        }
      }
      if (!found) {
        return absl::NotFoundError(
            absl::StrCat(path, ": no chat template named '", want, "' (has: ", names, ")"));
      }
    } else if (!ct.is_null()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": chat_template must be a string or a list"));
    }
  }
  if (!found)
    return absl::NotFoundError(absl::StrCat(path, ": the tokenizer has no chat_template"));

  absl::StatusOr<ChatTemplate> ct = Parse(source);
  if (!ct.ok())
    return absl::Status(ct.status().code(), absl::StrCat(path, ": ", ct.status().message()));
  nlohmann::ordered_json tokens = nlohmann::ordered_json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    if (std::optional<std::string> t = TokenText(config[key])) tokens[key] = *t;
  }
  if (config.contains("additional_special_tokens") &&
      config["additional_special_tokens"].is_array()) {
    nlohmann::ordered_json extra = nlohmann::ordered_json::array();
    for (const auto& t : config["additional_special_tokens"]) {
      if (std::optional<std::string> s = TokenText(t)) extra.push_back(*s);
    }
    if (!extra.empty()) tokens["additional_special_tokens"] = extra;
  }
  ct->SetSpecialTokens(tokens);
  return ct;
}

absl::StatusOr<std::string> ChatTemplate::RenderValues(const jinja::Value& messages,
                                                       bool add_generation_prompt,
                                                       const jinja::Value& extra_context) const {
  absl::StatusOr<jinja::Value> prepared = PrepareMessages(messages);
  if (!prepared.ok()) return prepared.status();
  if (!extra_context.is_dict() && !extra_context.is_none() && !extra_context.is_undefined()) {
    return absl::InvalidArgumentError("chat template extra_context must be a JSON object");
  }
  jinja::ValueDict context;
  jinja::Value tokens = jinja::Value::FromJson(special_tokens_);
  for (const auto& [k, v] : tokens.as_dict().entries) context.Set(k, v);
  for (const auto& [k, v] : extra_context.as_dict().entries) context.Set(k, v);
  context.Set("messages", *std::move(prepared));
  if (!context.Find("tools")) context.Set("tools", jinja::Value::None());
  if (!context.Find("documents")) context.Set("documents", jinja::Value::None());
  context.Set("add_generation_prompt", jinja::Value::Bool(add_generation_prompt));
  absl::StatusOr<std::string> out = template_.Render(context, options_);
  if (!out.ok()) {
    return absl::Status(out.status().code(),
                        absl::StrCat("chat template: ", out.status().message()));
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const nlohmann::ordered_json& messages, bool add_generation_prompt,
    const nlohmann::ordered_json& extra_context) const {
  return RenderValues(jinja::Value::FromJson(messages), add_generation_prompt,
                      jinja::Value::FromJson(extra_context));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::json& extra_context) const {
  return RenderValues(jinja::Value::FromJson(messages), add_generation_prompt,
                      jinja::Value::FromJson(extra_context));
}

}  // namespace retort

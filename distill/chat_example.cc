#include "distill/chat_example.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/utf8.h"
#include "formats/json_fields.h"
#include "formats/reasoning.h"

namespace retort {
namespace {

using ojson = nlohmann::ordered_json;

// A content no template produces by itself: what follows it in a rendered
// assistant turn is the template's end-of-turn text.
constexpr char kSentinel[] = "RETORTSENTINELASSISTANTCONTENT";

std::string StripNewlines(const std::string& s, bool leading, bool trailing) {
  size_t b = 0, e = s.size();
  if (leading) {
    while (b < e && s[b] == '\n') ++b;
  }
  if (trailing) {
    while (e > b && s[e - 1] == '\n') --e;
  }
  return s.substr(b, e - b);
}

// A string field of a message; "" when absent or null. Error when present
// with another type.
absl::StatusOr<std::string> StringField(const ojson& message, const char* key, size_t index,
                                        const std::string& where) {
  const JsonFields fields(where, JsonFields::Shown::kType);
  const std::string field = absl::StrCat("messages[", index, "].", key);
  const ojson* value = JsonFields::Find(message, key);
  if (value == nullptr) return std::string();
  ASSIGN_OR_RETURN(std::string s, fields.String(*value, field));
  if (const size_t bad = ValidUtf8Prefix(s); bad < s.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", field, " is not valid UTF-8 (byte ", bad, ")"));
  }
  return s;
}

absl::Status CheckMessages(const ojson& messages, const std::string& where) {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected a non-empty array of {\"role\", \"content\"} messages"));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ojson& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": messages[", i, "] has no string \"role\""));
    }
    auto c = m.find("content");
    if (c != m.end() && !c->is_null() && !c->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": messages[", i, "].content must be a string, got ", c->type_name()));
    }
  }
  return absl::OkStatus();
}

ojson Slice(const ojson& messages, size_t n) {
  ojson out = ojson::array();
  for (size_t i = 0; i < n; ++i) out.push_back(messages[i]);
  return out;
}

constexpr const char* kReasoningKeys[] = {"reasoning_content", "reasoning", "thinking"};

}  // namespace

nlohmann::ordered_json WithoutReasoning(const nlohmann::ordered_json& messages) {
  ojson out = messages;
  if (!out.is_array()) return out;
  for (ojson& m : out) {
    if (!m.is_object()) continue;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string() || role->get<std::string>() != "assistant") continue;
    for (const char* key : kReasoningKeys) m.erase(key);
    auto content = m.find("content");
    if (content != m.end() && content->is_string()) {
      *content = RemoveThinkBlocks(content->get<std::string>());
    }
  }
  return out;
}

// ---- chat samples -------------------------------------------------------------

absl::StatusOr<ChatExampleBuilder> ChatExampleBuilder::Create(const ChatTemplate* tmpl,
                                                              const Tokenizer* tokenizer,
                                                              ChatExampleOptions options) {
  if (tmpl == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("ChatExampleBuilder needs a chat template and a tokenizer");
  }
  ChatExampleBuilder b;
  b.tmpl_ = tmpl;
  b.tokenizer_ = tokenizer;
  b.options_ = options;
  ojson probe = ojson::array({ojson{{"role", "user"}, {"content", "Hi"}},
                              ojson{{"role", "assistant"}, {"content", kSentinel}}});
  absl::StatusOr<std::string> text = tmpl->Render(probe, /*add_generation_prompt=*/false);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template: rendering a user + assistant turn to find its end-of-turn text failed: ",
        text.status().message()));
  }
  const size_t at = text->rfind(kSentinel);
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "chat template: the assistant's content does not appear in its rendering, so its "
        "end-of-turn text cannot be found");
  }
  b.end_of_turn_ = text->substr(at + sizeof(kSentinel) - 1);
  return b;
}

absl::StatusOr<ChatExampleBuilder::Texts> ChatExampleBuilder::RenderFinalTurn(
    const ojson& original, const std::string& where) const {
  RETURN_IF_ERROR(CheckMessages(original, where));
  const ojson stripped = options_.answers_only ? WithoutReasoning(original) : ojson();
  const ojson& messages = options_.answers_only ? stripped : original;
  const size_t last = messages.size() - 1;
  const ojson& final_turn = messages[last];
  if (final_turn["role"].get<std::string>() != "assistant") {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": last message is not the assistant's (role \"",
                     final_turn["role"].get<std::string>(), "\")"));
  }
  ASSIGN_OR_RETURN(std::string content, StringField(final_turn, "content", last, where));
  std::string reasoning;
  for (const char* key : kReasoningKeys) {
    ASSIGN_OR_RETURN(reasoning, StringField(final_turn, key, last, where));
    if (!reasoning.empty()) break;
  }
  reasoning = StripNewlines(reasoning, true, true);
  if (absl::StripAsciiWhitespace(content).empty() &&
      absl::StripAsciiWhitespace(reasoning).empty()) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": empty completion"));
  }

  Texts t;
  absl::StatusOr<std::string> prompt =
      tmpl_->Render(Slice(messages, last), /*add_generation_prompt=*/true);
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": chat template (prompt): ", prompt.status().message()));
  }
  t.prompt = *std::move(prompt);

  // 1. The template's own rendering of the final turn, when it continues the
  //    generation prompt and keeps the reasoning.
  absl::StatusOr<std::string> full = tmpl_->Render(messages, /*add_generation_prompt=*/false);
  if (full.ok() && full->size() > t.prompt.size() && absl::StartsWith(*full, t.prompt)) {
    std::string rest = full->substr(t.prompt.size());
    const std::string content_core(absl::StripAsciiWhitespace(content));
    if ((reasoning.empty() || absl::StrContains(rest, reasoning)) &&
        absl::StrContains(rest, content_core)) {
      t.completion = std::move(rest);
      t.from_template = true;
    }
  }
  // 2. Constructed.
  if (!t.from_template) {
    if (!reasoning.empty()) {
      t.completion = JoinReasoning(reasoning, StripNewlines(content, true, false)) + end_of_turn_;
    } else {
      t.completion = content + end_of_turn_;
    }
  }
  const std::string think_open(kReasoningPrefix);
  if (absl::EndsWith(t.prompt, think_open) && absl::StartsWith(t.completion, think_open)) {
    t.completion.erase(0, think_open.size());
  }
  return t;
}

absl::Status ChatExampleBuilder::AppendEarlierTurns(const ojson& messages, const std::string& where,
                                                    TrainExample* ex, std::string* rendered) const {
  const size_t last = messages.size() - 1;
  auto render = [&](size_t n, bool gen) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> s = tmpl_->Render(Slice(messages, n), gen);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": chat template: ", s.status().message()));
    }
    return s;
  };
  auto not_prefix = [&](size_t turn) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the chat template renders the conversation up to messages[", turn,
        "] differently from its continuation (it rewrites earlier turns, e.g. drops <think>); "
        "train only the final assistant turn with this template"));
  };
  for (size_t k = 1; k < last; ++k) {
    if (messages[k]["role"].get<std::string>() != "assistant") continue;
    ASSIGN_OR_RETURN(std::string prompt, render(k, true));
    ASSIGN_OR_RETURN(std::string full, render(k + 1, false));
    if (!absl::StartsWith(prompt, *rendered) || !absl::StartsWith(full, prompt))
      return not_prefix(k);
    EncodeOptions first;
    first.avoid_double_bos = true;
    EncodeOptions plain;
    plain.add_special_tokens = false;
    const std::string between = prompt.substr(rendered->size());
    ex->Append(tokenizer_->Encode(between, rendered->empty() ? first : plain), 0);
    ex->Append(tokenizer_->Encode(full.substr(prompt.size()), plain), 1);
    *rendered = std::move(full);
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainExample> ChatExampleBuilder::Build(const ojson& original, const std::string& id,
                                                       const std::string& where) const {
  ASSIGN_OR_RETURN(Texts t, RenderFinalTurn(original, where));
  // (RenderFinalTurn checked the messages.)
  const ojson stripped = options_.answers_only ? WithoutReasoning(original) : ojson();
  const ojson& messages = options_.answers_only ? stripped : original;
  TrainExample ex;
  ex.id = id;
  std::string rendered;
  if (options_.train_all_assistant_turns) {
    RETURN_IF_ERROR(AppendEarlierTurns(messages, where, &ex, &rendered));
    if (!absl::StartsWith(t.prompt, rendered)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where,
                       ": the chat template's generation prompt for the final turn does not extend "
                       "its rendering of the earlier turns; train only the final assistant turn"));
    }
  }
  EncodeOptions prompt_options;
  prompt_options.avoid_double_bos = true;
  EncodeOptions plain;
  plain.add_special_tokens = false;
  ex.Append(tokenizer_->Encode(t.prompt.substr(rendered.size()),
                               rendered.empty() ? prompt_options : plain),
            0);
  ex.Append(tokenizer_->Encode(t.completion, plain), 1);
  return ex;
}

}  // namespace retort

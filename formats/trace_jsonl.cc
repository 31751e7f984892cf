#include "formats/trace_jsonl.h"

#include <cctype>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/status.h"
#include "core/utf8.h"
#include "formats/json_fields.h"

namespace retort {
namespace {

using ojson = nlohmann::ordered_json;

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Message content: a string, null (tool-call turns) or OpenAI's list of parts,
// of which the text parts are concatenated.
absl::StatusOr<std::string> GetContent(const ojson& j, const std::string& field,
                                       const JsonFields& ref) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return std::string();
  if (j.is_array()) {
    std::string text;
    for (size_t i = 0; i < j.size(); ++i) {
      const ojson& part = j[i];
      const std::string part_field = absl::StrCat(field, "[", i, "]");
      if (part.is_string()) {
        text += part.get<std::string>();
      } else if (part.is_object() && part.contains("text")) {
        ASSIGN_OR_RETURN(std::string t, ref.String(part["text"], part_field + ".text"));
        text += t;
      } else {
        return ref.Bad(part_field, "expected a text part ({\"type\":\"text\",\"text\":...})");
      }
    }
    return text;
  }
  return ref.Bad(field, absl::StrCat("expected a string, null or a list of text parts, got ",
                                     JsonFields::TypeName(j)));
}

// Reference answers are strings, but datasets also carry bare numbers.
absl::StatusOr<std::optional<std::string>> GetAnswer(const ojson& j, const std::string& field,
                                                     const JsonFields& ref) {
  if (j.is_null()) return std::optional<std::string>();
  if (j.is_string()) return std::optional<std::string>(j.get<std::string>());
  if (j.is_number()) return std::optional<std::string>(j.dump());
  return ref.Bad(field,
                 absl::StrCat("expected a string or a number, got ", JsonFields::TypeName(j)));
}

// An assistant turn without an explicit reasoning field gets its think block
// split off.
void SplitAssistant(TraceMessage* m) {
  if (m->role != "assistant") return;
  ThinkSplit split = SplitThink(m->content);
  if (!split.found) return;
  m->reasoning_content = std::move(split.reasoning);
  m->content = std::move(split.answer);
}

absl::StatusOr<TraceMessage> ParseMessage(const ojson& j, const std::string& field,
                                          const JsonFields& ref) {
  if (!j.is_object())
    return ref.Bad(field, absl::StrCat("expected an object, got ", JsonFields::TypeName(j)));
  TraceMessage m;
  if (!j.contains("role")) return ref.Bad(field + ".role", "missing");
  ASSIGN_OR_RETURN(m.role, ref.String(j["role"], field + ".role"));
  if (!j.contains("content")) return ref.Bad(field + ".content", "missing");
  ASSIGN_OR_RETURN(m.content, GetContent(j["content"], field + ".content", ref));
  bool has_reasoning = false;
  for (const char* key : {"reasoning_content", "reasoning"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    ASSIGN_OR_RETURN(m.reasoning_content, ref.String(j[key], absl::StrCat(field, ".", key)));
    has_reasoning = true;
    break;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "role" || it.key() == "content" || it.key() == "reasoning_content" ||
        (it.key() == "reasoning" && has_reasoning)) {
      continue;
    }
    m.extra[it.key()] = it.value();
  }
  if (!has_reasoning) SplitAssistant(&m);
  return m;
}

absl::StatusOr<std::vector<TraceMessage>> ParseMessages(const ojson& j, const std::string& field,
                                                        const JsonFields& ref) {
  if (!j.is_array())
    return ref.Bad(field, absl::StrCat("expected a list, got ", JsonFields::TypeName(j)));
  std::vector<TraceMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    ASSIGN_OR_RETURN(TraceMessage m, ParseMessage(j[i], absl::StrCat(field, "[", i, "]"), ref));
    messages.push_back(std::move(m));
  }
  return messages;
}

// ShareGPT turns: {"from": "human"|"gpt"|"system"|..., "value": ...}.
absl::StatusOr<std::vector<TraceMessage>> ParseConversations(const ojson& j,
                                                             const JsonFields& ref) {
  const std::string field = "conversations";
  if (!j.is_array())
    return ref.Bad(field, absl::StrCat("expected a list, got ", JsonFields::TypeName(j)));
  std::vector<TraceMessage> messages;
  for (size_t i = 0; i < j.size(); ++i) {
    const ojson& turn = j[i];
    const std::string tf = absl::StrCat(field, "[", i, "]");
    if (!turn.is_object())
      return ref.Bad(tf, absl::StrCat("expected an object, got ", JsonFields::TypeName(turn)));
    if (!turn.contains("from")) return ref.Bad(tf + ".from", "missing");
    if (!turn.contains("value")) return ref.Bad(tf + ".value", "missing");
    ASSIGN_OR_RETURN(std::string from, ref.String(turn["from"], tf + ".from"));
    TraceMessage m;
    if (from == "human" || from == "user") {
      m.role = "user";
    } else if (from == "gpt" || from == "assistant" || from == "chatgpt" || from == "model") {
      m.role = "assistant";
    } else if (from == "system") {
      m.role = "system";
    } else if (from == "tool" || from == "function" || from == "observation") {
      m.role = "tool";
    } else {
      return ref.Bad(tf + ".from", absl::StrCat("unknown speaker \"", from,
                                                "\" (expected human, gpt, system or tool)"));
    }
    ASSIGN_OR_RETURN(m.content, GetContent(turn["value"], tf + ".value", ref));
    SplitAssistant(&m);
    messages.push_back(std::move(m));
  }
  return messages;
}

TraceMessage UserMessage(std::string text) {
  TraceMessage m;
  m.role = "user";
  m.content = std::move(text);
  return m;
}

TraceMessage AssistantMessage(std::string text) {
  TraceMessage m;
  m.role = "assistant";
  m.content = std::move(text);
  SplitAssistant(&m);
  return m;
}

// Keys a dialect reads; everything else goes to TraceSample::extra.
bool IsKnownKey(const std::string& key) {
  static const char* const kKnown[] = {"id",
                                       "uuid",
                                       "sample",
                                       "messages",
                                       "conversations",
                                       "problem",
                                       "prompt",
                                       "generation",
                                       "generations",
                                       "answer",
                                       "solution",
                                       "correct",
                                       "correctness_math_verify",
                                       "finish_reason",
                                       "prompt_tokens",
                                       "completion_tokens",
                                       "time_s",
                                       "verifier"};
  for (const char* k : kKnown) {
    if (key == k) return true;
  }
  return false;
}

absl::StatusOr<std::vector<TraceSample>> ParseLine(std::string_view line, int64_t line_no,
                                                   const std::string& path, bool all_generations) {
  const JsonFields ref(absl::StrCat(path, ":", line_no), JsonFields::Shown::kType);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (const size_t bad = ValidUtf8Prefix(line); bad < line.size()) {
    return ref.Bad("", absl::StrCat("invalid UTF-8 at byte ", bad, " of the line"));
  }
  if (Trim(line).empty()) return ref.Bad("", "empty line, expected a JSON object");
  ASSIGN_OR_RETURN(ojson j, ParseOrderedJson(line, ref.source()));
  if (!j.is_object())
    return ref.Bad("", absl::StrCat("expected a JSON object, got ", JsonFields::TypeName(j)));

  TraceSample base;
  // Identity.
  if (j.contains("id")) {
    if (j["id"].is_number_integer()) {
      base.id = j["id"].dump();
    } else {
      ASSIGN_OR_RETURN(base.id, ref.String(j["id"], "id"));
    }
  } else if (j.contains("uuid")) {
    ASSIGN_OR_RETURN(base.id, ref.String(j["uuid"], "uuid"));
  } else {
    base.id = absl::StrCat(line_no);
  }
  if (j.contains("sample")) {
    ASSIGN_OR_RETURN(base.sample, ref.Int(j["sample"], "sample"));
  }
  // Reference answer: "answer" (final answer) wins over "solution" (worked).
  for (const char* key : {"answer", "solution"}) {
    if (!j.contains(key)) continue;
    ASSIGN_OR_RETURN(base.answer, GetAnswer(j[key], key, ref));
    if (base.answer) break;
  }
  if (j.contains("correct") && !j["correct"].is_null()) {
    ASSIGN_OR_RETURN(base.correct, ref.Bool(j["correct"], "correct"));
  }
  if (j.contains("finish_reason") && !j["finish_reason"].is_null()) {
    ASSIGN_OR_RETURN(base.finish_reason, ref.String(j["finish_reason"], "finish_reason"));
  }
  for (auto [key, dst] : {std::pair{"prompt_tokens", &base.prompt_tokens},
                          std::pair{"completion_tokens", &base.completion_tokens}}) {
    if (!j.contains(key)) continue;
    ASSIGN_OR_RETURN(*dst, ref.Int(j[key], key));
    if (*dst < 0) return ref.Bad(key, absl::StrCat("expected >= 0, got ", *dst));
  }
  if (j.contains("time_s")) {
    ASSIGN_OR_RETURN(base.time_s, ref.Number(j["time_s"], "time_s"));
  }
  if (j.contains("verifier") && !j["verifier"].is_null()) {
    ASSIGN_OR_RETURN(base.verifier, ref.String(j["verifier"], "verifier"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!IsKnownKey(it.key())) base.extra[it.key()] = it.value();
  }

  // Conversation, by dialect.
  std::vector<TraceSample> out;
  if (j.contains("messages") && !j["messages"].is_null()) {
    ASSIGN_OR_RETURN(base.messages, ParseMessages(j["messages"], "messages", ref));
    out.push_back(std::move(base));
    return out;
  }
  if (j.contains("conversations")) {
    ASSIGN_OR_RETURN(base.messages, ParseConversations(j["conversations"], ref));
    out.push_back(std::move(base));
    return out;
  }
  const char* prompt_key = j.contains("problem")  ? "problem"
                           : j.contains("prompt") ? "prompt"
                                                  : nullptr;
  if (prompt_key == nullptr) {
    return ref.Bad("messages",
                   "missing (and no \"conversations\", \"problem\" or \"prompt\" field)");
  }
  std::vector<TraceMessage> prompt;
  if (j[prompt_key].is_array()) {
    ASSIGN_OR_RETURN(prompt, ParseMessages(j[prompt_key], prompt_key, ref));
  } else {
    ASSIGN_OR_RETURN(std::string text, ref.String(j[prompt_key], prompt_key));
    prompt.push_back(UserMessage(std::move(text)));
  }
  if (j.contains("generation") && !j["generation"].is_null()) {
    ASSIGN_OR_RETURN(std::string gen, ref.String(j["generation"], "generation"));
    base.messages = std::move(prompt);
    base.messages.push_back(AssistantMessage(std::move(gen)));
    out.push_back(std::move(base));
    return out;
  }
  if (j.contains("generations") && !j["generations"].is_null()) {
    const ojson& gens = j["generations"];
    if (!gens.is_array()) {
      return ref.Bad("generations",
                     absl::StrCat("expected a list, got ", JsonFields::TypeName(gens)));
    }
    const ojson* verdicts = nullptr;
    if (j.contains("correctness_math_verify") && j["correctness_math_verify"].is_array()) {
      verdicts = &j["correctness_math_verify"];
    }
    for (size_t i = 0; i < gens.size(); ++i) {
      const std::string field = absl::StrCat("generations[", i, "]");
      ASSIGN_OR_RETURN(std::string gen, ref.String(gens[i], field));
      TraceSample s = base;
      s.sample = static_cast<int64_t>(i);
      s.messages = prompt;
      s.messages.push_back(AssistantMessage(std::move(gen)));
      if (verdicts != nullptr && i < verdicts->size() && (*verdicts)[i].is_boolean()) {
        s.correct = (*verdicts)[i].get<bool>();
        if (s.verifier.empty()) s.verifier = "math_verify";
      }
      if (all_generations || out.empty()) out.push_back(std::move(s));
    }
    if (out.empty()) return ref.Bad("generations", "empty list");
    return out;
  }
  // A prompt without a completion (a prompts file).
  base.messages = std::move(prompt);
  out.push_back(std::move(base));
  return out;
}

}  // namespace

const TraceMessage* TraceSample::Completion() const {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->role == "assistant") return &*it;
  }
  return nullptr;
}

std::string TraceSample::PromptText() const {
  for (const TraceMessage& m : messages) {
    if (m.role == "user") return m.content;
  }
  return "";
}

absl::StatusOr<TraceSample> ParseTraceLine(std::string_view line, int64_t line_no,
                                           const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<TraceSample> samples, ParseLine(line, line_no, path, false));
  return std::move(samples.front());
}

absl::StatusOr<std::vector<TraceSample>> ParseTraceLineSamples(std::string_view line,
                                                               int64_t line_no,
                                                               const std::string& path) {
  return ParseLine(line, line_no, path, true);
}

std::string TraceSampleToJsonLine(const TraceSample& s) {
  ojson j = ojson::object();
  j["id"] = s.id;
  j["sample"] = s.sample;
  ojson messages = ojson::array();
  for (const TraceMessage& m : s.messages) {
    ojson mj = ojson::object();
    mj["role"] = m.role;
    // The reasoning goes inline, "<think>\nR\n</think>\n\nA", as in
    // open-r1's datasets: every chat template renders it (most ignore a
    // "reasoning_content" key, so TRL's SFTTrainer would learn the answers
    // alone), and the reader splits it back.
    mj["content"] =
        m.role == "assistant" ? JoinReasoning(m.reasoning_content, m.content) : m.content;
    if (m.role != "assistant" && !m.reasoning_content.empty()) {
      mj["reasoning_content"] = m.reasoning_content;
    }
    if (m.extra.is_object()) {
      for (auto it = m.extra.begin(); it != m.extra.end(); ++it) mj[it.key()] = it.value();
    }
    messages.push_back(std::move(mj));
  }
  j["messages"] = std::move(messages);
  if (s.answer) j["answer"] = *s.answer;
  if (s.correct) j["correct"] = *s.correct;
  if (!s.finish_reason.empty()) j["finish_reason"] = s.finish_reason;
  j["prompt_tokens"] = s.prompt_tokens;
  j["completion_tokens"] = s.completion_tokens;
  j["time_s"] = s.time_s;
  if (!s.verifier.empty()) j["verifier"] = s.verifier;
  if (s.extra.is_object()) {
    for (auto it = s.extra.begin(); it != s.extra.end(); ++it) {
      if (!j.contains(it.key())) j[it.key()] = it.value();
    }
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::vector<TraceSample>> ReadTraceJsonl(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<TraceSample> samples;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (Trim(line).empty()) continue;
    ASSIGN_OR_RETURN(std::vector<TraceSample> got, ParseTraceLineSamples(line, line_no, path));
    for (TraceSample& s : got) samples.push_back(std::move(s));
  }
  return samples;
}

}  // namespace retort

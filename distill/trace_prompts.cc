#include "distill/trace_prompts.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/file.h"
#include "core/json_limits.h"
#include "core/named_values.h"
#include "core/status.h"
#include "distill/data.h"
#include "formats/reasoning.h"
#include "model/sampler.h"

namespace retort {
namespace {

using Json = nlohmann::ordered_json;

// splitmix64's output for state x (model/sampler.h advances a state in place).
uint64_t Mix64(uint64_t x) { return SplitMix64(x); }

}  // namespace

absl::StatusOr<std::vector<TracePrompt>> ReadTracePrompts(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<TracePrompt> prompts;
  std::map<std::string, int64_t> seen;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) {
      if (nl >= text.size()) break;
      continue;
    }
    auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", what));
    };
    absl::StatusOr<Json> parsed = ParseOrderedJson(line, "the line");
    if (!parsed.ok()) {
      return error(
          absl::StrCat("bad JSON (expected one object per line; ", parsed.status().message(), ")"));
    }
    Json j = *std::move(parsed);
    if (!j.is_object()) return error("expected a JSON object");
    TracePrompt p;
    p.line = line_no;
    auto id = j.find("id");
    if (id == j.end()) return error("id: missing");
    if (id->is_string()) {
      p.id = id->get<std::string>();
    } else if (id->is_number_integer()) {
      p.id = std::to_string(id->get<int64_t>());
    } else {
      return error("id: expected a string or an integer");
    }
    if (p.id.empty()) return error("id: empty");
    auto prompt = j.find("prompt");
    auto messages = j.find("messages");
    if ((prompt == j.end()) == (messages == j.end())) {
      return error("expected exactly one of \"prompt\" (a string) or \"messages\" (a chat list)");
    }
    if (prompt != j.end()) {
      if (!prompt->is_string()) return error("prompt: expected a string");
      p.messages = Json::array({Json{{"role", "user"}, {"content", prompt->get<std::string>()}}});
    } else {
      if (!messages->is_array() || messages->empty()) {
        return error("messages: expected a non-empty list of {\"role\", \"content\"} objects");
      }
      for (size_t i = 0; i < messages->size(); ++i) {
        const Json& m = (*messages)[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
            !m.contains("content") || !m["content"].is_string()) {
          return error(
              absl::StrCat("messages[", i, "]: expected {\"role\": string, \"content\": string}"));
        }
      }
      p.messages = *messages;
    }
    if (auto a = j.find("answer"); a != j.end() && !a->is_null()) {
      if (a->is_string()) {
        p.answer = a->get<std::string>();
      } else if (a->is_number()) {
        p.answer = a->dump();
      } else {
        return error("answer: expected a string or a number");
      }
    }
    if (auto [it, fresh] = seen.emplace(p.id, line_no); !fresh) {
      return error(absl::StrCat("duplicate id \"", p.id, "\" (first on line ", it->second, ")"));
    }
    prompts.push_back(std::move(p));
    if (nl >= text.size()) break;
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no prompts"));
  return prompts;
}

uint64_t TraceSampleSeed(uint64_t seed, const std::string& id, int64_t sample) {
  // 63 bits: a non-negative JSON integer that any OpenAI-compatible server
  // takes as "seed".
  return Mix64(seed ^ Mix64(StableHash64(id) + static_cast<uint64_t>(sample))) >> 1;
}

absl::StatusOr<ThinkPrefix> ParseThinkPrefix(const std::string& name) {
  static constexpr NamedValue<ThinkPrefix> kThinkPrefixes[] = {
      {ThinkPrefix::kAuto, "auto"}, {ThinkPrefix::kOn, "on"}, {ThinkPrefix::kOff, "off"}};
  if (std::optional<ThinkPrefix> p = FindNamedValue(kThinkPrefixes, name)) return *p;
  return absl::InvalidArgumentError(
      absl::StrCat("think prefix \"", name, "\": expected ", NamesOf(kThinkPrefixes)));
}

absl::StatusOr<RenderedPrompt> RenderTracePrompt(const ChatTemplate& chat_template,
                                                 const Tokenizer& tokenizer,
                                                 const nlohmann::ordered_json& messages,
                                                 ThinkPrefix think) {
  RenderedPrompt out;
  ASSIGN_OR_RETURN(out.text,
                   chat_template.Render(messages, /*add_generation_prompt=*/true, Json::object()));
  if (EndsInsideReasoning(out.text)) {
    out.starts_in_reasoning = true;
  } else if (think == ThinkPrefix::kOn ||
             (think == ThinkPrefix::kAuto &&
              chat_template.source().find(kReasoningOpenTag) != std::string::npos)) {
    out.text += kReasoningPrefix;
    out.starts_in_reasoning = true;
  }
  EncodeOptions enc;
  enc.add_special_tokens = true;
  enc.avoid_double_bos = true;
  out.ids = tokenizer.Encode(out.text, enc);
  return out;
}

}  // namespace retort

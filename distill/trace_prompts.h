// Prompts of a trace job (`retort generate --prompts`): the prompts file,
// the seed of every sample, and a prompt rendered for a local teacher.
//
// Prompts file: one JSON object per line,
//   {"id": "p1", "prompt": "text"}                      one user turn, or
//   {"id": "p1", "messages": [{"role", "content"}...]}  a chat,
//   optional "answer" (string or number): the reference for the verifier.
// Errors name "<path>:<line>": bad JSON, a missing/mistyped id, neither or
// both of prompt/messages, a duplicate id.
//
// Seeds: sample i of prompt `id` is drawn with seed
//   TraceSampleSeed(seed, id, i) = splitmix64(seed ^ splitmix64(fnv1a64(id) + i)) >> 1
// (63 bits, so an endpoint gets it as a non-negative JSON integer)
// so a sample does not depend on the order of the prompts, on the batch it
// ran in, or on whether the job was resumed (up to the f32 rounding
// BatchGenerator documents for different batch compositions).
//
// Thread-safety: pure functions.
#ifndef RETORT_DISTILL_TRACE_PROMPTS_H_
#define RETORT_DISTILL_TRACE_PROMPTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace retort {

// One prompt of a prompts file.
struct TracePrompt {
  std::string id;
  nlohmann::ordered_json messages;    // OpenAI chat array
  std::optional<std::string> answer;  // reference answer
  int64_t line = 0;                   // 1-based line in the file
};

// Reads a prompts JSONL file (blank lines skipped). See the top of the file.
absl::StatusOr<std::vector<TracePrompt>> ReadTracePrompts(const std::string& path);

// The seed of sample `sample` of prompt `id` (see the top of the file).
uint64_t TraceSampleSeed(uint64_t seed, const std::string& id, int64_t sample);

// How to open the assistant turn of a reasoning teacher.
enum class ThinkPrefix { kAuto, kOn, kOff };
absl::StatusOr<ThinkPrefix> ParseThinkPrefix(const std::string& name);  // auto|on|off

// A prompt rendered for the local engine.
struct RenderedPrompt {
  std::string text;
  std::vector<int32_t> ids;
  // The prompt ends inside an opened <think>: the completion is reasoning
  // until </think>.
  bool starts_in_reasoning = false;
};
// Renders `messages` with the chat template (add_generation_prompt) and
// tokenizes it as `retort serve` does (special tokens, no doubled BOS).
// kAuto opens the assistant turn with "<think>\n" when the template mentions
// "<think>" and its generation prompt does not already end with it (R1-style
// teachers; DeepSeek advises forcing it); kOn always (unless already there);
// kOff never adds it. A generation prompt that already ends with "<think>"
// always counts as starting in reasoning.
absl::StatusOr<RenderedPrompt> RenderTracePrompt(const ChatTemplate& chat_template,
                                                 const Tokenizer& tokenizer,
                                                 const nlohmann::ordered_json& messages,
                                                 ThinkPrefix think);

}  // namespace retort

#endif  // RETORT_DISTILL_TRACE_PROMPTS_H_

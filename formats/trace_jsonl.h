// Trace JSONL: one TraceSample per line, in open-r1's layout (a chat
// "messages" list whose assistant turn carries "reasoning_content"), so other
// tools read our traces and we read theirs. The reader also accepts plain
// OpenAI chat lines, ShareGPT "conversations" and open-r1's dataset columns
// (problem / generation(s) / answer / solution). formats/traces.md has the
// layout.
//
// Thread safety: pure functions.
#ifndef RETORT_FORMATS_TRACE_JSONL_H_
#define RETORT_FORMATS_TRACE_JSONL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "formats/reasoning.h"
#include "nlohmann/json.hpp"

namespace retort {

// One chat turn. Assistant turns keep the reasoning apart from the answer.
struct TraceMessage {
  std::string role;               // "system", "user", "assistant", "tool", ...
  std::string content;            // for assistant turns: the answer after </think>
  std::string reasoning_content;  // assistant turns: the text inside <think>...</think>
  // Keys of the message object other than role/content/reasoning_content
  // (tool_calls, name, ...), kept for round trips.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

// One generated sample: the prompt, the teacher's reasoning and answer, and
// the bookkeeping `retort generate` needs to resume and filter.
struct TraceSample {
  std::string id;      // prompt id; several samples share one
  int64_t sample = 0;  // index of this generation for the prompt
  std::vector<TraceMessage> messages;
  std::optional<std::string> answer;  // reference answer of the prompt
  std::optional<bool> correct;        // verdict of `verifier` on the final answer
  std::string finish_reason;          // "stop", "length" or "" (unknown)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double time_s = 0.0;
  std::string verifier;  // what set `correct` ("math", "exact", ...); "" = none
  // Any other top-level keys of the line, written back after the known ones.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();

  // The last assistant turn (the completion), or nullptr.
  const TraceMessage* Completion() const;
  // The content of the first user turn, or "".
  std::string PromptText() const;
};

// Parses one JSONL line in any accepted dialect (see formats/traces.md):
//   native/open-r1 traces  {"id", "sample", "messages", "answer", "correct", ...}
//   OpenAI chat            {"messages": [{"role", "content"}, ...]}
//   ShareGPT               {"conversations": [{"from": "human"|"gpt"|"system", "value"}]}
//   open-r1 columns        {"problem"|"prompt", "generation"|"generations",
//                           "answer"|"solution", "messages"}
// Assistant content with <think>...</think> and no "reasoning_content" is split
// with SplitThink. A missing id becomes "uuid" if present, else the line number.
// For a row with a "generations" list and no "messages", this returns the
// first generation; ParseTraceLineSamples returns all of them.
// Errors (InvalidArgument) read "<path>:<line_no>: <field>: <problem>":
// invalid UTF-8 (with the byte offset), bad JSON, no recognised content,
// missing or mistyped fields.
absl::StatusOr<TraceSample> ParseTraceLine(std::string_view line, int64_t line_no,
                                           const std::string& path);
// As ParseTraceLine, but an open-r1 row with "generations": [g0, g1, ...]
// gives one sample per generation (sample = i, correct from
// "correctness_math_verify"[i] when present).
absl::StatusOr<std::vector<TraceSample>> ParseTraceLineSamples(std::string_view line,
                                                               int64_t line_no,
                                                               const std::string& path);

// One line of native JSON, no trailing newline. Invalid UTF-8 in any string is
// replaced by U+FFFD (serialising never fails).
std::string TraceSampleToJsonLine(const TraceSample& sample);

// Every sample of a JSONL file (blank lines skipped, CRLF accepted). The first
// bad line fails the whole read.
absl::StatusOr<std::vector<TraceSample>> ReadTraceJsonl(const std::string& path);

}  // namespace retort

#endif  // RETORT_FORMATS_TRACE_JSONL_H_

// The reasoning-tag convention of reasoning models (DeepSeek-R1, Qwen3,
// R1-Distill): a completion writes its reasoning inside <think>...</think>
// and the answer after it. Trace files keep the two apart (reasoning_content
// and content); chat templates, the endpoint client, the trainer and the CLI
// put them back together or split them again. This file is the one place
// that knows the tags and how they are laid out.
//
// Thread safety: pure functions.
#ifndef RETORT_FORMATS_REASONING_H_
#define RETORT_FORMATS_REASONING_H_

#include <string>
#include <string_view>

namespace retort {

inline constexpr std::string_view kReasoningOpenTag = "<think>";
inline constexpr std::string_view kReasoningCloseTag = "</think>";
// How an assistant turn opens its reasoning ("<think>\n"): what R1-style
// generation prompts end with, and what JoinReasoning writes.
inline constexpr std::string_view kReasoningPrefix = "<think>\n";

// A reasoning model's output split at its think tags.
struct ThinkSplit {
  std::string reasoning;  // between <think> and </think>, surrounding whitespace trimmed
  std::string answer;     // the rest (text before <think> and after </think>), trimmed
  bool found = false;     // a think tag was present
};
// "<think>\nR\n</think>\n\nA" -> {R, A, true}. Also handles the completion of
// an R1 prompt that already ended in "<think>\n" ("R</think>A") and an
// unterminated "<think>R" cut by the length limit ({R, "", true}). Without
// tags: {"", text, false}.
ThinkSplit SplitThink(std::string_view text);

// The inverse of SplitThink for a non-empty reasoning:
// "<think>\n" + reasoning + "\n</think>\n\n" + answer; just `answer` when
// `reasoning` is empty.
std::string JoinReasoning(std::string_view reasoning, std::string_view answer);

// Whether a rendered prompt ends (trailing whitespace aside) with an open
// <think>: the completion then starts inside the reasoning and runs until
// </think>.
bool EndsInsideReasoning(std::string_view prompt);

// Length of the longest suffix of `text` that is a proper prefix of `s`:
// streamed text that may still grow into a tag or a stop string, and so is
// held back until more arrives.
size_t PartialSuffixLength(std::string_view text, std::string_view s);

// `text` without its <think>...</think> blocks: each block is removed with
// its tags; an unclosed <think> removes everything after it; a </think>
// before any <think> (a completion whose prompt opened the reasoning, as
// R1-Distill's does) removes everything before it. Leading whitespace of what
// is left is dropped.
std::string RemoveThinkBlocks(const std::string& text);

}  // namespace retort

#endif  // RETORT_FORMATS_REASONING_H_

// The one way retort parses JSON from files and other untrusted bytes
// (config.json, tokenizer.json, recipes, trace and metrics lines, endpoint
// replies). nlohmann's parser recurses once per nesting level, so a document
// like "[[[[...]]]]" a few hundred thousand levels deep overflows the stack;
// ParseJson first measures the nesting with a linear scan of the bytes (no
// recursion, strings and escapes skipped) and refuses anything deeper than
// the limit, then parses without exceptions escaping: every failure is an
// InvalidArgument "<what>: ..." in one line.
//
// Lives in core/ because text/ (tokenizer.json, chat templates) and formats/
// both need it and neither may depend on the other.
// Thread safety: pure functions.
#ifndef RETORT_CORE_JSON_LIMITS_H_
#define RETORT_CORE_JSON_LIMITS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace retort {

struct JsonLimits {
  // Real files nest far less: tokenizer.json and config.json under 10 levels,
  // chat messages with tool calls under 20. 64 leaves room for anything
  // legitimate while staying thousands of levels below a stack overflow.
  int max_depth = 64;
};

// OK when no array or object in `text` nests deeper than limits.max_depth;
// otherwise InvalidArgument "<what>: JSON nests deeper than <n> levels (at
// byte <offset>)". Does not validate the rest of the syntax.
absl::Status CheckJsonDepth(std::string_view text, std::string_view what, JsonLimits limits = {});

// CheckJsonDepth, then nlohmann's parser; a syntax error becomes
// InvalidArgument "<what>: not valid JSON: <parser's message>".
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what,
                                         JsonLimits limits = {});
// The same, keeping the order of object members (recipes, chat templates,
// trace lines that are written back out).
absl::StatusOr<nlohmann::ordered_json> ParseOrderedJson(std::string_view text,
                                                        std::string_view what,
                                                        JsonLimits limits = {});

}  // namespace retort

#endif  // RETORT_CORE_JSON_LIMITS_H_
